"""`train_and_evaluate(config, workdir)`: the training loop, callable from main, a notebook or a test.

One jitted train step with explicit shardings and donated state runs per iteration; the
host reads device values only at log, eval and checkpoint steps, so steps are dispatched
ahead of the devices.

Non-finite losses: the train step refuses to apply an update whose loss or gradient norm
is NaN/Inf and freezes the state from then on (TrainState.nonfinite_step). The loop reads
that flag at the next log, eval or checkpoint step, before writing anything, and raises
FloatingPointError naming the offending step. So training stops at that step in the sense
that no update from it or after it reaches the parameters, and no checkpoint is written
after it; the last checkpoint on disk is the last good one.

What is trained comes from a task (`config.task`): classification.py and segmentation.py.
A task gives the dataset info, model, optimizer, first variables, training batches, the
training step and an evaluation; everything else here is the same for every task.
"""
import os
import signal
import threading
from typing import Any, Dict, Tuple

from absl import logging
from clu import metric_writers
from clu import parameter_overview
from clu import periodic_actions
import jax
import ml_collections
import numpy as np

from smt_jax import data
from smt_jax.train import checkpointing
from smt_jax.train import classification
from smt_jax.train import optim
from smt_jax.train import progress as progress_lib
from smt_jax.train import segmentation
from smt_jax.train import sharding
from smt_jax.train import train_step as train_step_lib
from smt_jax.train import validate
from smt_jax.train import xla_options

TASKS = {'classification': classification.Classification,
         'segmentation': segmentation.Segmentation}


class _Sigterm:
  """Remembers a SIGTERM (how TPU VMs announce preemption) so the loop can save and exit.

  With several processes, orbax's preemption sync point makes every process stop at the
  same step instead; JAX's distributed runtime receives the signal there.
  """

  def __init__(self):
    self.received = threading.Event()
    self._previous = None
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self.received.set())

  def restore(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _check_finite(state, checkpointer: checkpointing.Checkpointer) -> None:
  bad = int(jax.device_get(state.nonfinite_step))
  if bad:
    checkpointer.wait()
    raise FloatingPointError(
        f'Training stopped: the loss or gradient norm of step {bad} is NaN or Inf. That '
        'step\'s update was not applied and nothing after it was saved; the last '
        f'checkpoint (step {checkpointer.latest_step()}) in {checkpointer.directory} is '
        'unchanged. Lower config.optim.base_lr, lengthen the warmup or check the data.')


def create_task(config: ml_collections.ConfigDict, workdir: str):
  """The task `config.task` names, built from `config`."""
  if config.task not in TASKS:
    raise validate.ConfigError(f'config.task={config.task!r} is not a task; choose one of '
                               f'{", ".join(TASKS)}.')
  return TASKS[config.task](config, workdir)


class _Setup:
  """The mesh, shardings, optimizer and abstract train state of a task's run."""

  def __init__(self, task):
    config = task.config
    self.mesh = sharding.create_mesh(config.mesh)
    self.batch_sh = sharding.batch_sharding(self.mesh)
    self.steps_per_epoch, self.total_steps = optim.steps_for(config,
                                                             task.info.num_train_examples)
    rules = tuple((p, tuple(s) if isinstance(s, (list, tuple)) else s)
                  for p, s in config.mesh.rules)
    self.abstract_vars = task.abstract_variables()
    self.tx, self.schedule = task.optimizer(self.abstract_vars['params'],
                                            self.steps_per_epoch, self.total_steps)
    self.abstract_state = jax.eval_shape(
        lambda v: train_step_lib.create_state(v, self.tx, task.use_ema), self.abstract_vars)
    state_sh = sharding.tree_shardings(self.abstract_state, self.mesh, rules,
                                       config.mesh.min_shard_size)
    if task.use_ema:  # evaluated by the same eval step as the parameters
      state_sh = state_sh.replace(ema_params=state_sh.params)
    self.state_sh = state_sh


def restore_latest(config: ml_collections.ConfigDict, workdir: str
                   ) -> Tuple[Any, train_step_lib.TrainState]:
  """(task, TrainState) of the newest complete checkpoint of a training `workdir`.

  `config` must be the run's (it fixes the model and the optimizer state's structure).
  Raises CheckpointError if the workdir holds no checkpoint.
  """
  validate.check_config(config)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  directory = os.path.join(workdir, 'checkpoints')
  no_checkpoint = checkpointing.CheckpointError(
      f'{directory} holds no checkpoint: is {workdir} the --workdir of a training run?')
  if not os.path.isdir(directory):
    raise no_checkpoint
  task = create_task(config, workdir)
  setup = _Setup(task)
  checkpointer = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints,
                                            best_metric=task.best_metric)
  try:
    restored = checkpointer.restore_latest(
        checkpointing.abstract_with_shardings(setup.abstract_state, setup.state_sh))
  finally:
    checkpointer.close()
  if restored is None:
    raise no_checkpoint
  return task, restored[1]


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str
                       ) -> Tuple[train_step_lib.TrainState, Dict[str, float]]:
  """Trains (or, with config.eval_only, evaluates) as `config` says, in `workdir`.

  Resumes from the latest checkpoint in WORKDIR/checkpoints if there is one. Returns the
  final state and the metrics of the last evaluation ({} if none ran).
  """
  validate.check_config(config)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  checkpointing.check_workdir(workdir)
  task = create_task(config, workdir)
  config, info = task.config, task.info
  setup = _Setup(task)
  mesh, batch_sh, state_sh = setup.mesh, setup.batch_sh, setup.state_sh
  tx, schedule, total_steps = setup.tx, setup.schedule, setup.total_steps
  use_ema = task.use_ema

  checkpointer = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints,
                                            best_metric=task.best_metric)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  restored = checkpointer.restore_latest(
      checkpointing.abstract_with_shardings(setup.abstract_state, state_sh))
  if config.eval_only and restored is None and not config.init_from:
    raise validate.ConfigError(
        f'config.eval_only: nothing to evaluate; {checkpointer.directory} has no checkpoint '
        'and config.init_from is not set.')
  if restored is not None:
    _, state, stream = restored
    if not config.eval_only:
      try:
        data.check_resumable(stream, config)
      except ValueError as e:
        raise validate.ConfigError(str(e)) from None
  else:
    variables = task.initial_variables(state_sh)
    state = jax.jit(lambda v: train_step_lib.create_state(v, tx, use_ema),
                    out_shardings=state_sh)(variables)
  parameter_overview.log_parameter_overview(state.params, include_stats=False,
                                            jax_logging_process=0)
  start = int(jax.device_get(state.step))
  train_iter = None if config.eval_only else task.train_iterator(start, batch_sh)
  progress = progress_lib.Progress(total_steps, config.batch_size)
  progress.start(start, config.model.name,
                 sum(x.size for x in jax.tree.leaves(setup.abstract_vars['params'])),
                 info.num_train_examples,
                 info.num_eval_examples if info.eval_split is not None else None, workdir)

  evaluate = task.evaluator(state_sh, batch_sh, mesh)

  def run_eval(step: int) -> Dict[str, float]:
    if evaluate is None:
      return {}
    metrics = evaluate(state.params, state.batch_stats)
    if use_ema:
      ema = evaluate(state.ema_params, state.batch_stats)
      metrics.update({k.replace('eval/', 'eval_ema/'): v for k, v in ema.items()})
    writer.write_scalars(step, metrics)
    writer.flush()
    return metrics

  if config.eval_only:
    metrics = run_eval(start)
    logging.info('Evaluation at step %d: %s', start, progress_lib.result_line(metrics))
    checkpointer.close()
    return state, metrics

  train_step = jax.jit(
      task.train_step(tx), in_shardings=(state_sh, batch_sh),
      out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=0,
      compiler_options=xla_options.compiler_options())

  hooks = [periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)]
  if config.profile_steps and jax.process_index() == 0:
    hooks.append(periodic_actions.Profile(
        logdir=workdir, num_profile_steps=config.profile_steps, every_secs=None,
        first_profile=start + config.profile_first_step))
  sigterm = _Sigterm()
  eval_metrics: Dict[str, float] = {}
  pending = []
  logging.info('Training %s from step %d to %d (%d steps per epoch) on a %s mesh.',
               config.model.name, start, total_steps, setup.steps_per_epoch, dict(mesh.shape))
  try:
    for step in range(start + 1, total_steps + 1):
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, metrics = train_step(state, next(train_iter))
      pending.append(metrics)
      for hook in hooks:
        hook(step)
      last = step == total_steps
      if step % config.log_every_steps == 0 or last:
        _check_finite(state, checkpointer)
        fetched = jax.device_get(pending)
        pending = []
        scalars = {'train/loss': float(np.mean([m['loss'] for m in fetched])),
                   'train/grad_norm': float(np.mean([m['grad_norm'] for m in fetched])),
                   'train/lr': float(schedule(step - 1))}
        writer.write_scalars(step, scalars)
        progress.train(step, scalars['train/loss'], scalars['train/lr'])
      step_metrics = None
      if (config.eval_every_steps > 0 and step % config.eval_every_steps == 0) or last:
        _check_finite(state, checkpointer)
        step_metrics = eval_metrics = run_eval(step)
        progress.eval(step, step_metrics)
      preempted = sigterm.received.is_set() or (
          jax.process_count() > 1 and checkpointer.manager.reached_preemption(step))
      # Evaluated states are saved too, so that the best one by task.best_metric is kept.
      if step % config.checkpoint_every_steps == 0 or step_metrics or last or preempted:
        _check_finite(state, checkpointer)
        checkpointer.save(step, state, data.stream_identity(config), step_metrics or None)
      if preempted:
        logging.warning('Preemption signal received: saved step %d; exiting.', step)
        break
  finally:
    sigterm.restore()
    train_iter.close()
    checkpointer.close()
    writer.flush()
  progress.finish(int(jax.device_get(state.step)), checkpointer.directory)
  return state, eval_metrics
