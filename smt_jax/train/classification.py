"""Image classification (`config.task = 'classification'`): what the training loop runs for SMT
on ImageNet, image folders and the demo's digits.

A task gives the loop its dataset, model, optimizer, first variables, input batches,
training step and evaluation; the loop (loop.py) does the rest, the same for every task.
"""
import functools
import os
from typing import Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from smt_jax import data
from smt_jax.models import abstract_variables
from smt_jax.train import digits
from smt_jax.train import init as init_lib
from smt_jax.train import optim
from smt_jax.train import sharding
from smt_jax.train import train_step as train_step_lib
from smt_jax.train import validate
from smt_jax.train import xla_options


def _resolve_dataset(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """Materializes a built-in dataset (the demo's digits) as an image folder on first use."""
  if config.dataset != digits.NAME:
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  config.data_dir = digits.write_folder(config.data_dir or os.path.join(workdir, 'data'))
  config.dataset = 'folder'
  return config


def _evaluate(eval_step, zeros, params, batch_stats, eval_iter) -> Dict[str, float]:
  """Loss, top-1 and top-5 over the whole evaluation split (padding excluded)."""
  sums = zeros()
  for batch in eval_iter:
    sums = eval_step(params, batch_stats, batch, sums)
  sums = jax.device_get(sums)
  n = float(sums['num_examples'])
  return {'eval/loss': float(sums['loss']) / n, 'eval/top1': float(sums['top1']) / n,
          'eval/top5': float(sums['top5']) / n, 'eval/num_examples': n}


class Classification:
  """SMT with a classifier head, the official ImageNet recipe (configs/smt_*.py)."""

  best_metric = 'eval/top1'

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config = _resolve_dataset(config, workdir)
    self.info = data.dataset_info(config)
    self.model = validate.create_model_from_config(config, self.info.num_classes)
    self.use_ema = config.optim.ema_decay is not None

  def abstract_variables(self):
    return abstract_variables(self.model)

  def optimizer(self, params, steps_per_epoch: int, total_steps: int
                ) -> Tuple[optax.GradientTransformation, optax.Schedule]:
    return optim.create_optimizer(self.config.optim, params, self.config.batch_size,
                                  steps_per_epoch, total_steps)

  def initial_variables(self, state_shardings):
    return init_lib.initial_variables(self.model, self.config, state_shardings)

  def train_iterator(self, start_step: int, batch_sharding) -> data.TrainIterator:
    return data.TrainIterator(self.config, start_step=start_step, sharding=batch_sharding)

  def train_step(self, tx: optax.GradientTransformation):
    config = self.config
    prepare = data.make_prepare(config.aug, self.info.num_classes, dtype=self.model.dtype)
    return train_step_lib.make_train_step(self.model, tx, prepare, config.seed,
                                          config.optim.grad_accum_steps,
                                          config.optim.ema_decay)

  def evaluator(self, state_shardings, batch_sharding, mesh
                ) -> Optional[Callable[..., Dict[str, float]]]:
    """evaluate(params, batch_stats) -> {'eval/top1', ...} over the split; None without one."""
    if self.info.eval_split is None:
      return None
    eval_iter = data.EvalIterator(self.config, sharding=batch_sharding,
                                  batch_size=self.config.eval_batch_size)
    step = train_step_lib.make_eval_step(
        self.model, functools.partial(data.prepare_eval, dtype=self.model.dtype))

    def accumulate(params, batch_stats, batch, sums):
      return jax.tree.map(jnp.add, sums, step(params, batch_stats, batch))

    rep = sharding.replicated(mesh)
    zeros = jax.jit(lambda: {k: jnp.zeros((), jnp.float32) for k in train_step_lib.EVAL_SUMS},
                    out_shardings=rep)
    eval_step = jax.jit(
        accumulate, in_shardings=(state_shardings.params, state_shardings.batch_stats,
                                  batch_sharding, rep),
        out_shardings=rep, donate_argnums=3, compiler_options=xla_options.compiler_options())
    return functools.partial(_evaluate, eval_step, zeros, eval_iter=eval_iter)
