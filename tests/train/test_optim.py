"""The optimizer recipe: schedule, lr scaling, decay mask, layer decay, and the train step's
accumulation, EMA and non-finite guard on a toy model (fast to compile)."""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from smt_jax.models import abstract_variables, create_model
from smt_jax.train import optim
from smt_jax.train import train_step as train_step_lib
import train_helpers


def _optim_config(**overrides):
  config = train_helpers.default.get_config().optim
  config.update(overrides)
  return config


def test_lrs_scale_with_global_batch():
  assert optim.scaled_lrs(_optim_config(), 1024) == pytest.approx((2e-3, 2e-7, 2e-6))


def test_schedule_is_the_official_loops_rate_of_each_update():
  # timm's cosine with warmup as a prefix, at scheduler time t: linear warmup over 10
  # steps, then a cosine over the remaining 90. Update c (from 0) uses time max(c - 1, 0).
  schedule = optim.lr_schedule(1.0, 0.1, 0.01, warmup_steps=10, total_steps=100)
  scheduler = lambda t: schedule(t + 1)
  assert float(schedule(0)) == float(schedule(1)) == pytest.approx(0.1)
  assert float(scheduler(5)) == pytest.approx(0.55)
  for t in (10, 40, 99):
    expected = 0.01 + 0.5 * 0.99 * (1 + math.cos(math.pi * (t - 10) / 90))
    assert float(scheduler(t)) == pytest.approx(expected, rel=1e-6)
  assert float(scheduler(10)) == pytest.approx(1.0)
  assert float(scheduler(100)) == pytest.approx(0.01)
  assert float(scheduler(1000)) == pytest.approx(0.01)


def test_schedule_without_warmup_starts_at_the_base_rate():
  schedule = optim.lr_schedule(1.0, 0.1, 0.01, warmup_steps=0, total_steps=100)
  assert float(schedule(0)) == float(schedule(1)) == pytest.approx(1.0)
  assert float(schedule(51)) == pytest.approx(0.505, rel=1e-6)


def test_steps_from_epochs_or_explicit():
  config = ml_collections.ConfigDict({'batch_size': 100, 'num_epochs': 2.5,
                                      'num_train_steps': -1})
  assert optim.steps_for(config, 1050) == (10, 25)
  config.num_train_steps = 7
  assert optim.steps_for(config, 1050) == (10, 7)


@pytest.fixture(scope='module')
def smt_params():
  model = create_model('smt_t', embed_dims=(8, 16, 32, 64), depths=(2, 2, 2, 1),
                       num_classes=4)
  return abstract_variables(model)['params']


def test_weight_decay_skips_one_dimensional_parameters(smt_params):
  mask = optim.decay_mask(smt_params)
  assert mask['head']['kernel'] and mask['block3_1']['attn']['kv']['kernel']
  assert not mask['head']['bias'] and not mask['norm4']['scale']
  assert not mask['block1_0']['norm1']['bias']


def test_layer_ids_follow_network_depth(smt_params):
  ids, num_layers = optim.layer_ids(smt_params)
  assert num_layers == 8  # 7 blocks + 1
  assert ids['patch_embed1/conv1/kernel'] == 0
  assert ids['block1_0/attn/v/kernel'] == 1 and ids['block1_1/mlp/fc1/kernel'] == 2
  assert ids['patch_embed2/proj/kernel'] == ids['block2_0/norm1/scale'] == 3
  assert ids['norm2/scale'] == ids['block2_1/mlp/fc2/bias'] == 4
  assert ids['block4_0/attn/q/kernel'] == 7
  assert ids['norm4/bias'] == 7 and ids['head/kernel'] == 8


def test_layer_decay_scales_updates():
  leaf = lambda: jnp.zeros((2, 2))
  params = {'patch_embed1': {'conv1': {'kernel': leaf()}}, 'block1_0': {'fc': {'kernel': leaf()}},
            'block2_0': {'fc': {'kernel': leaf()}}, 'head': {'kernel': leaf()}}
  grads = jax.tree.map(jnp.ones_like, params)
  config = _optim_config(layer_decay=0.5, weight_decay=0.0, warmup_epochs=0.0)
  tx, _ = optim.create_optimizer(config, params, 512, 10, 100)
  updates, _ = tx.update(grads, tx.init(params), params)
  lr = config.base_lr
  # Adam's first step is lr * sign(grad) (up to eps); layer decay multiplies it by
  # 0.5 ** (num_layers - id), here with 2 blocks: stem 0, blocks 1 and 2, head 3.
  for name, depth in (('head', 3), ('block2_0', 2), ('block1_0', 1), ('patch_embed1', 0)):
    kernel = jax.tree.leaves(updates[name])[0]
    np.testing.assert_allclose(kernel, -lr * 0.5 ** (3 - depth), rtol=1e-4, err_msg=name)


def test_gradients_are_clipped_before_adam():
  params = {'w': jnp.zeros((4, 4))}
  tx, _ = optim.create_optimizer(_optim_config(clip_grad_norm=5.0), params, 512, 10, 100)
  _, state = tx.update({'w': jnp.full((4, 4), 10.0)}, tx.init(params), params)
  # Global norm 40 clipped to 5: each entry 1.25, so Adam's first moment is 0.1 * 1.25.
  np.testing.assert_allclose(state[1].mu['w'], 0.125, rtol=1e-6)


class _Toy(nn.Module):
  """A linear classifier: no batch statistics, so accumulation is exact."""

  @nn.compact
  def __call__(self, x, train=False):
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


def _toy_setup(accum, ema_decay=0.9):
  model = _Toy()
  params = model.init(jax.random.key(0), jnp.zeros((1, 2, 2, 3)))
  tx = optax.sgd(0.1)
  state = train_step_lib.create_state(params, tx, use_ema=True)

  def prepare(rng, batch):
    del rng
    return batch['image'], jax.nn.one_hot(batch['label'], 3)

  step = jax.jit(train_step_lib.make_train_step(model, tx, prepare, 0, accum, ema_decay))
  batch = {'image': jnp.asarray(np.random.default_rng(0).normal(size=(8, 2, 2, 3)),
                                jnp.float32), 'label': jnp.arange(8) % 3}
  return state, step, batch


def test_accumulation_equals_the_whole_batch():
  state1, step1, batch = _toy_setup(1)
  state4, step4, _ = _toy_setup(4)
  state1, m1 = step1(state1, batch)
  state4, m4 = step4(state4, batch)
  np.testing.assert_allclose(m1['loss'], m4['loss'], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               state1.params, state4.params)


def test_ema_tracks_the_parameters():
  state, step, batch = _toy_setup(1)
  start = state.params
  state, _ = step(state, batch)
  jax.tree.map(lambda e, p0, p: np.testing.assert_allclose(e, 0.9 * p0 + 0.1 * p, rtol=1e-6),
               state.ema_params, start, state.params)


def test_non_finite_step_is_not_applied_and_freezes_the_state():
  state, step, batch = _toy_setup(1)
  state, _ = step(state, batch)
  good = jax.device_get(state)
  bad_batch = dict(batch, image=batch['image'].at[0, 0, 0, 0].set(jnp.nan))
  state, metrics = step(state, bad_batch)
  assert not np.isfinite(metrics['loss'])
  assert int(state.nonfinite_step) == 2 and int(state.step) == 1
  state, _ = step(state, batch)  # later finite steps change nothing either
  assert int(state.nonfinite_step) == 2 and int(state.step) == 1
  train_helpers.assert_trees_equal(good.params, jax.device_get(state.params))
