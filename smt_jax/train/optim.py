"""The official SMT optimizer recipe in optax: schedule, AdamW, decay mask, clipping, layer decay.

Gradient accumulation is not an optax wrapper here: the train step scans over
micro-batches (see train_step.py) so that one step is always one optimizer update and
the schedule, EMA and checkpoints all count updates.
"""
import math
import re
from typing import Any, Dict, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

# The official code scales all three learning rates by global_batch / 512.
REFERENCE_BATCH = 512


def scaled_lrs(optim: ml_collections.ConfigDict, global_batch: int) -> Tuple[float, float, float]:
  """(base, warmup, min) learning rates scaled linearly by the global batch."""
  scale = global_batch / REFERENCE_BATCH
  return optim.base_lr * scale, optim.warmup_lr * scale, optim.min_lr * scale


def lr_schedule(base_lr: float, warmup_lr: float, min_lr: float, warmup_steps: int,
                total_steps: int) -> optax.Schedule:
  """The learning rate of each update of the official training loop, by update index.

  The official code builds timm's CosineLRScheduler with `warmup_prefix=True`
  (lr_scheduler.build_scheduler, config TRAIN.LR_SCHEDULER.WARMUP_PREFIX): at scheduler
  time t, a linear warmup warmup_lr + t * (base_lr - warmup_lr) / warmup_steps while
  t < warmup_steps, then a cosine over the remaining total_steps - warmup_steps:
  min_lr + (base_lr - min_lr) * (1 + cos(pi * u / (total_steps - warmup_steps))) / 2 with
  u = t - warmup_steps, and min_lr from u = total_steps - warmup_steps on.

  Its loop (main.train_one_epoch) calls `lr_scheduler.step_update(t)` after the update
  numbered t (from 0), so update t + 1 runs with the rate of time t, and the first update
  runs with the rate the scheduler set when it was built, that of time 0. The returned
  schedule is indexed like optax's update count c (0 for the first update) and gives that
  rate: the scheduler at time max(c - 1, 0). Updates 0 and 1 both use warmup_lr.
  """
  cosine_steps = max(total_steps - warmup_steps, 1)

  def scheduler(t):
    warm = warmup_lr + t * (base_lr - warmup_lr) / max(warmup_steps, 1)
    left = jnp.clip(cosine_steps - (t - warmup_steps), 0, cosine_steps)
    # (1 + cos(pi * u / T)) / 2 as sin(pi / 2 * (T - u) / T) ** 2, with T - u an exact
    # integer: float32 keeps its relative precision up to the end of the cosine, where
    # the rate approaches min_lr.
    cos = min_lr + (base_lr - min_lr) * jnp.sin(0.5 * jnp.pi * left / cosine_steps) ** 2
    return jnp.where(t < warmup_steps, warm, cos)

  def schedule(count):
    return scheduler(jnp.maximum(jnp.asarray(count, jnp.float32) - 1, 0))

  return schedule


def poly_schedule(base_lr: float, total_steps: int, warmup_steps: int, warmup_ratio: float,
                  power: float = 1.0, min_lr: float = 0.0) -> optax.Schedule:
  """mmcv's PolyLrUpdaterHook with linear warmup, by_epoch=False (the mmseg recipes).

  Before iteration i (from 0) mmcv sets the poly rate
  poly(i) = (base_lr - min_lr) * (1 - i / total_steps) ** power + min_lr, and while
  i < warmup_steps scales it by 1 - (1 - i / warmup_steps) * (1 - warmup_ratio). Iteration i
  is optax's update count, so the schedule is that formula at the count.

  Written for float32: 1 - i / total_steps as (total_steps - i) / total_steps, with the
  difference of integers exact, and the warmup factor as warmup_ratio + i * (1 -
  warmup_ratio) / warmup_steps, so the first and last rates keep their relative precision.
  """
  def schedule(count):
    i = jnp.asarray(count, jnp.float32)
    left = jnp.maximum(total_steps - i, 0) / total_steps
    poly = (base_lr - min_lr) * left ** power + min_lr
    warm = warmup_ratio + i * ((1 - warmup_ratio) / max(warmup_steps, 1))
    return jnp.where(i < warmup_steps, poly * warm, poly)

  return schedule


def path_str(path, sep: str = '/') -> str:
  """'params/block3_5/attn/kv/kernel'-style name of a pytree key path (joined by `sep`)."""
  parts = []
  for key in path:
    for attr in ('key', 'name', 'idx'):
      if hasattr(key, attr):
        parts.append(str(getattr(key, attr)))
        break
    else:
      parts.append(str(key))
  return sep.join(parts)


def decay_mask(params) -> Any:
  """Weight decay applies to tensors of rank >= 2 only (not norms, biases, layer scale)."""
  return jax.tree.map(lambda p: p.ndim > 1, params)


def layer_ids(params) -> Tuple[Dict[str, int], int]:
  """Maps each parameter path to its depth for layer-wise lr decay; returns (ids, num_layers).

  The stem is layer 0, block j of the whole network is layer j + 1 (stages counted in
  order), a stage's downsampling shares the id of the stage's first block, its norm the
  id of its last block, and the classifier head is the top layer.
  """
  flat = {path_str(p): None for p, _ in jax.tree_util.tree_leaves_with_path(params)}
  depths = {}
  for name in flat:
    m = re.search(r'block(\d)_(\d+)/', name)
    if m:
      stage, j = int(m.group(1)), int(m.group(2))
      depths[stage] = max(depths.get(stage, 0), j + 1)
  first = {}
  total = 0
  for stage in sorted(depths):
    first[stage] = total + 1
    total += depths[stage]
  num_layers = total + 1
  ids = {}
  for name in flat:
    block = re.search(r'block(\d)_(\d+)/', name)
    embed = re.search(r'patch_embed(\d)/', name)
    norm = re.search(r'(?:^|/)norm(\d)/', name)
    if block:
      ids[name] = first[int(block.group(1))] + int(block.group(2))
    elif embed:
      stage = int(embed.group(1))
      ids[name] = 0 if stage == 1 else first.get(stage, num_layers)
    elif norm and int(norm.group(1)) in first:
      stage = int(norm.group(1))
      ids[name] = first[stage] + depths[stage] - 1
    else:
      ids[name] = num_layers
  return ids, num_layers


def layer_decay_scales(params, decay: float) -> Any:
  """Per-parameter lr multipliers decay ** (num_layers - layer_id) (BEiT-style)."""
  ids, num_layers = layer_ids(params)
  return jax.tree_util.tree_map_with_path(
      lambda p, _: float(decay ** (num_layers - ids[path_str(p)])), params)


def scale_by_tree(scales) -> optax.GradientTransformation:
  """Multiplies each update by a fixed per-parameter constant."""
  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, s: u * jnp.asarray(s, u.dtype), updates, scales), state
  return optax.GradientTransformation(lambda _: optax.EmptyState(), update)


def create_optimizer(optim: ml_collections.ConfigDict, params, global_batch: int,
                     steps_per_epoch: int, total_steps: int
                     ) -> Tuple[optax.GradientTransformation, optax.Schedule]:
  """AdamW with the official schedule, decay mask and clipping; returns (tx, schedule)."""
  base, warm, low = scaled_lrs(optim, global_batch)
  # int(), not round(): the official build_scheduler truncates warmup epochs x iterations.
  warmup_steps = int(optim.warmup_epochs * steps_per_epoch)
  schedule = lr_schedule(base, warm, low, warmup_steps, total_steps)
  parts = []
  if optim.clip_grad_norm:
    parts.append(optax.clip_by_global_norm(optim.clip_grad_norm))
  parts += [optax.scale_by_adam(b1=optim.b1, b2=optim.b2, eps=optim.eps),
            optax.add_decayed_weights(optim.weight_decay, mask=decay_mask),
            optax.scale_by_learning_rate(schedule)]
  if optim.layer_decay:
    parts.append(scale_by_tree(layer_decay_scales(params, optim.layer_decay)))
  return optax.chain(*parts), schedule


def create_poly_optimizer(optim: ml_collections.ConfigDict, total_steps: int
                          ) -> Tuple[optax.GradientTransformation, optax.Schedule]:
  """The mmseg recipes' AdamW: weight decay on every parameter, `poly_schedule`, no batch
  scaling of the rate; clipping if `optim.clip_grad_norm` is set. Returns (tx, schedule)."""
  schedule = poly_schedule(optim.base_lr, total_steps, optim.warmup_steps, optim.warmup_ratio,
                           optim.power, optim.min_lr)
  parts = [optax.clip_by_global_norm(optim.clip_grad_norm)] if optim.clip_grad_norm else []
  parts += [optax.scale_by_adam(b1=optim.b1, b2=optim.b2, eps=optim.eps),
            optax.add_decayed_weights(optim.weight_decay),
            optax.scale_by_learning_rate(schedule)]
  return optax.chain(*parts), schedule


def ema_update(ema, params, decay: float):
  """ema <- decay * ema + (1 - decay) * params, in the parameters' dtype."""
  return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema, params)


def steps_for(config: ml_collections.ConfigDict, num_train_examples: int) -> Tuple[int, int]:
  """(steps_per_epoch, total_steps); `num_train_steps` > 0 overrides `num_epochs`."""
  steps_per_epoch = max(num_train_examples // config.batch_size, 1)
  if config.num_train_steps and config.num_train_steps > 0:
    return steps_per_epoch, int(config.num_train_steps)
  return steps_per_epoch, int(math.ceil(config.num_epochs * steps_per_epoch))
