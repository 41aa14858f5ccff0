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
"""
import functools
import os
import signal
import threading
from typing import Dict, Tuple

from absl import logging
from clu import metric_writers
from clu import parameter_overview
from clu import periodic_actions
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from smt_jax import data
from smt_jax.train import xla_options
from smt_jax.train import checkpointing
from smt_jax.train import digits
from smt_jax.train import init as init_lib
from smt_jax.train import optim
from smt_jax.train import progress as progress_lib
from smt_jax.train import sharding
from smt_jax.train import train_step as train_step_lib
from smt_jax.train import validate


def _resolve_dataset(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """Materializes a built-in dataset (the demo's digits) as an image folder on first use."""
  if config.dataset != digits.NAME:
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  config.data_dir = digits.write_folder(config.data_dir or os.path.join(workdir, 'data'))
  config.dataset = 'folder'
  return config


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
        'unchanged. Lower config.optim.base_lr, raise warmup_epochs or check the data.')


def evaluate(eval_step, zeros, params, batch_stats, eval_iter) -> Dict[str, float]:
  """Loss, top-1 and top-5 over the whole evaluation split (padding excluded)."""
  sums = zeros()
  for batch in eval_iter:
    sums = eval_step(params, batch_stats, batch, sums)
  sums = jax.device_get(sums)
  n = float(sums['num_examples'])
  return {'eval/loss': float(sums['loss']) / n, 'eval/top1': float(sums['top1']) / n,
          'eval/top5': float(sums['top5']) / n, 'eval/num_examples': n}


def _jit_eval_step(model, state_sh, batch_sh, mesh, dtype):
  """(eval_step(params, batch_stats, batch, sums) -> sums, zeros() -> initial sums), on device."""
  step = train_step_lib.make_eval_step(
      model, functools.partial(data.prepare_eval, dtype=dtype))

  def accumulate(params, batch_stats, batch, sums):
    return jax.tree.map(jnp.add, sums, step(params, batch_stats, batch))

  rep = sharding.replicated(mesh)
  zeros = jax.jit(lambda: {k: jnp.zeros((), jnp.float32) for k in train_step_lib.EVAL_SUMS},
                  out_shardings=rep)
  return jax.jit(accumulate, in_shardings=(state_sh.params, state_sh.batch_stats, batch_sh, rep),
                 out_shardings=rep, donate_argnums=3,
                 compiler_options=xla_options.compiler_options()), zeros


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str
                       ) -> Tuple[train_step_lib.TrainState, Dict[str, float]]:
  """Trains (or, with config.eval_only, evaluates) as `config` says, in `workdir`.

  Resumes from the latest checkpoint in WORKDIR/checkpoints if there is one. Returns the
  final state and the metrics of the last evaluation ({} if none ran).
  """
  validate.check_config(config)
  workdir = os.path.abspath(os.path.expanduser(workdir))
  checkpointing.check_workdir(workdir)
  config = _resolve_dataset(config, workdir)
  info = data.dataset_info(config)
  model = validate.create_model_from_config(config, info.num_classes)
  mesh = sharding.create_mesh(config.mesh)
  batch_sh = sharding.batch_sharding(mesh)
  steps_per_epoch, total_steps = optim.steps_for(config, info.num_train_examples)
  rules = tuple((p, tuple(s) if isinstance(s, (list, tuple)) else s) for p, s in config.mesh.rules)

  abstract_vars = init_lib.abstract_variables(model)
  tx, schedule = optim.create_optimizer(config.optim, abstract_vars['params'],
                                        config.batch_size, steps_per_epoch, total_steps)
  use_ema = config.optim.ema_decay is not None
  abstract_state = jax.eval_shape(
      lambda v: train_step_lib.create_state(v, tx, use_ema), abstract_vars)
  state_sh = sharding.tree_shardings(abstract_state, mesh, rules, config.mesh.min_shard_size)
  if use_ema:  # evaluated by the same eval step as the parameters
    state_sh = state_sh.replace(ema_params=state_sh.params)

  checkpointer = checkpointing.Checkpointer(workdir, keep=config.keep_checkpoints)
  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  restored = checkpointer.restore_latest(
      checkpointing.abstract_with_shardings(abstract_state, state_sh))
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
    variables = init_lib.initial_variables(model, config, state_sh)
    state = jax.jit(lambda v: train_step_lib.create_state(v, tx, use_ema),
                    out_shardings=state_sh)(variables)
  parameter_overview.log_parameter_overview(state.params, include_stats=False,
                                            jax_logging_process=0)
  start = int(jax.device_get(state.step))
  train_iter = None if config.eval_only else data.TrainIterator(
      config, start_step=start, sharding=batch_sh)
  progress = progress_lib.Progress(total_steps, config.batch_size)
  progress.start(start, config.model.name,
                 sum(x.size for x in jax.tree.leaves(abstract_vars['params'])),
                 info.num_train_examples,
                 info.num_eval_examples if info.eval_split is not None else None, workdir)

  compute_dtype = model.dtype
  eval_iter = None
  if info.eval_split is not None:
    eval_iter = data.EvalIterator(config, sharding=batch_sh, batch_size=config.eval_batch_size)
  eval_step, eval_zeros = _jit_eval_step(model, state_sh, batch_sh, mesh, compute_dtype)

  def run_eval(step: int) -> Dict[str, float]:
    if eval_iter is None:
      return {}
    metrics = evaluate(eval_step, eval_zeros, state.params, state.batch_stats, eval_iter)
    if use_ema:
      ema = evaluate(eval_step, eval_zeros, state.ema_params, state.batch_stats, eval_iter)
      metrics.update({k.replace('eval/', 'eval_ema/'): v for k, v in ema.items()})
    writer.write_scalars(step, metrics)
    writer.flush()
    return metrics

  if config.eval_only:
    metrics = run_eval(start)
    logging.info('Evaluation at step %d: top-1 %.4f, top-5 %.4f over %d examples.', start,
                 metrics.get('eval/top1', float('nan')), metrics.get('eval/top5', float('nan')),
                 int(metrics.get('eval/num_examples', 0)))
    checkpointer.close()
    return state, metrics

  prepare = data.make_prepare(config.aug, info.num_classes, dtype=compute_dtype)
  train_step = jax.jit(
      train_step_lib.make_train_step(model, tx, prepare, config.seed,
                                     config.optim.grad_accum_steps, config.optim.ema_decay),
      in_shardings=(state_sh, batch_sh), out_shardings=(state_sh, sharding.replicated(mesh)),
      donate_argnums=0, compiler_options=xla_options.compiler_options())

  hooks = [periodic_actions.ReportProgress(num_train_steps=total_steps, writer=writer)]
  if config.profile_steps and jax.process_index() == 0:
    hooks.append(periodic_actions.Profile(
        logdir=workdir, num_profile_steps=config.profile_steps, every_secs=None,
        first_profile=start + config.profile_first_step))
  sigterm = _Sigterm()
  eval_metrics: Dict[str, float] = {}
  pending = []
  logging.info('Training %s from step %d to %d (%d steps per epoch) on a %s mesh.',
               config.model.name, start, total_steps, steps_per_epoch, dict(mesh.shape))
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
      # Evaluated states are saved too, so that the best one by eval/top1 can be kept.
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
