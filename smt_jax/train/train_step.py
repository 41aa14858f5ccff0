"""Train state, loss, and the train / eval steps (pure functions, jitted by the loop).

Randomness is a function of (seed, step) only: the step folds its index into the seed's
key, so a run resumed from a checkpoint draws exactly the numbers an uninterrupted run
draws, and nothing random needs to be stored.
"""
from typing import Any, Callable, Dict, Optional

import flax
import jax
import jax.numpy as jnp
import optax

from smt_jax.train import optim

EVAL_SUMS = ('loss', 'top1', 'top5', 'num_examples')

# prepare(rng, batch) -> (float images, targets): device-side augmentation.
Prepare = Callable[[jax.Array, Dict[str, jax.Array]], Any]
# criterion(model outputs, targets) -> the batch's scalar float32 loss.
Criterion = Callable[[Any, jax.Array], jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs besides the data iterator position.

  `nonfinite_step` is 0 while every loss and gradient has been finite; otherwise it is the
  (1-based) step whose loss or gradient norm was NaN/Inf. From that step on the state is
  frozen: that step's update and all later ones are dropped, so the state equals the
  state after the last good step until the loop notices the flag and stops.
  """
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any
  nonfinite_step: jax.Array


def create_state(variables, tx: optax.GradientTransformation, use_ema: bool) -> TrainState:
  params = variables['params']
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      batch_stats=variables.get('batch_stats', {}), opt_state=tx.init(params),
      ema_params=jax.tree.map(jnp.copy, params) if use_ema else None,
      nonfinite_step=jnp.zeros((), jnp.int32))


def soft_cross_entropy(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Per-example cross-entropy against soft targets, in float32."""
  return -jnp.sum(targets * jax.nn.log_softmax(logits.astype(jnp.float32)), axis=-1)


def classification_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """Mean cross-entropy against soft targets (Mixup, CutMix, label smoothing)."""
  return soft_cross_entropy(logits, targets).mean()


def _split_micro(x: jax.Array, n: int) -> jax.Array:
  """(B, ...) -> (n, B / n, ...) taking every n-th example, so no example leaves its device."""
  return x.reshape(x.shape[0] // n, n, *x.shape[1:]).swapaxes(0, 1)


def make_train_step(model, tx: optax.GradientTransformation, prepare: Prepare, seed: int,
                    grad_accum_steps: int = 1, ema_decay: Optional[float] = None,
                    criterion: Criterion = classification_loss):
  """Returns train_step(state, batch) -> (state, metrics), one optimizer update per call.

  `prepare` turns the batch into (model inputs, targets) and `criterion` scores the
  model's outputs against the targets (default: classification with soft targets).

  With `grad_accum_steps` > 1 the batch is cut into that many micro-batches whose
  gradients are averaged by a scan, so memory scales with the micro-batch while the
  update is that of the whole batch.
  """

  def loss_fn(params, batch_stats, images, targets, rng):
    outputs, new_vars = model.apply(
        {'params': params, 'batch_stats': batch_stats}, images, train=True,
        rngs={'dropout': rng}, mutable=['batch_stats'])
    return criterion(outputs, targets), new_vars['batch_stats']

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state: TrainState, batch: Dict[str, jax.Array]):
    rng = jax.random.fold_in(jax.random.key(seed), state.step)
    prep_rng, drop_rng = jax.random.split(rng)
    images, targets = prepare(prep_rng, batch)
    if grad_accum_steps == 1:
      (loss, batch_stats), grads = grad_fn(state.params, state.batch_stats, images, targets,
                                           drop_rng)
    else:
      def micro_step(carry, xs):
        grads_sum, loss_sum, stats = carry
        i, micro_images, micro_targets = xs
        (loss, stats), grads = grad_fn(state.params, stats, micro_images, micro_targets,
                                       jax.random.fold_in(drop_rng, i))
        return (jax.tree.map(jnp.add, grads_sum, grads), loss_sum + loss, stats), None

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      xs = (jnp.arange(grad_accum_steps), _split_micro(images, grad_accum_steps),
            _split_micro(targets, grad_accum_steps))
      (grads, loss, batch_stats), _ = jax.lax.scan(
          micro_step, (zeros, jnp.zeros((), jnp.float32), state.batch_stats), xs)
      grads = jax.tree.map(lambda g: g / grad_accum_steps, grads)
      loss = loss / grad_accum_steps

    grad_norm = optax.tree.norm(grads)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = state.ema_params
    if ema_decay is not None:
      ema = optim.ema_update(ema, params, ema_decay)

    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    healthy = finite & (state.nonfinite_step == 0)
    updated = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state, ema_params=ema)
    new_state = jax.tree.map(lambda new, old: jnp.where(healthy, new, old), updated, state)
    first_bad = jnp.where((state.nonfinite_step == 0) & ~finite, state.step + 1,
                          state.nonfinite_step)
    new_state = new_state.replace(nonfinite_step=first_bad)
    return new_state, {'loss': loss, 'grad_norm': grad_norm}

  return train_step


def make_eval_step(model, prepare_eval: Callable[[Dict[str, jax.Array]], jax.Array]):
  """Returns eval_step(params, batch_stats, batch) -> summed metrics over real examples.

  Padded examples (batch['mask'] False) count nowhere, so the sums over all eval batches
  are exact for the whole split whatever the batch size.
  """

  def eval_step(params, batch_stats, batch):
    logits = model.apply({'params': params, 'batch_stats': batch_stats},
                         prepare_eval(batch), train=False).astype(jnp.float32)
    labels = batch['label']
    mask = batch['mask'].astype(jnp.float32)
    loss = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], -1)[:, 0]
    k = min(5, logits.shape[-1])
    top = jax.lax.top_k(logits, k)[1]
    hits = top == labels[:, None]
    return {'loss': jnp.sum(loss * mask), 'top1': jnp.sum(hits[:, 0] * mask),
            'top5': jnp.sum(hits.any(-1) * mask), 'num_examples': jnp.sum(mask)}

  return eval_step
