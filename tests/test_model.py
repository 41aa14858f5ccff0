"""SMT variants, API and train-mode behaviour."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from smt_jax.tools import summary
from smt_jax.models import create_model, layers

OFFICIAL = {  # parameters and GMACs at 224x224, from the official code
    'smt_t': (11_506_536, 2.46),
    'smt_s': (22_550_952, 4.84),
    'smt_b': (32_037_352, 7.97),
    'smt_l': (80_620_264, 17.91),
}
TINY = dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 2, 1), num_classes=10)


@pytest.fixture(name='tiny', scope='module')
def tiny_fixture():
  """A tiny SMT, its variables and a batch of two 64x64 images (initialized once).

  'rbg' keys: XLA:CPU compiles this init in half the time it takes with threefry.
  """
  model = create_model('smt_t', **TINY)
  images = jnp.linspace(-1, 1, 2 * 64 * 64 * 3).reshape(2, 64, 64, 3)
  return model, jax.jit(model.init)(jax.random.key(0, impl='rbg'), images), images


def _apply(model, *args, **kwargs):
  """model.apply under jit (eager dispatch of every op is slow on CPU)."""
  static = ('train', 'mutable', 'method')
  return jax.jit(model.apply, static_argnames=static)(*args, **kwargs)


@pytest.mark.parametrize('name', sorted(OFFICIAL))
def test_parameter_count_is_exact(name):
  params = jax.eval_shape(create_model(name).init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 224, 224, 3)))['params']
  assert summary.count_params(params) == OFFICIAL[name][0]


@pytest.mark.parametrize('name', sorted(OFFICIAL))
def test_compute_matches_official_macs(name):
  model = create_model(name)
  macs = summary.count_macs(model, 224)
  assert macs / 1e9 == pytest.approx(OFFICIAL[name][1], rel=0.01)


def test_xla_flops_are_twice_the_macs_plus_a_little():
  # XLA counts every operation, not only multiply-accumulates: at least 2 x MACs, and
  # the normalization/activation overhead stays a small fraction (see smt_jax/tools/summary.py).
  # One variant: the others have the same layers, and each costs a full compilation.
  model = create_model('smt_t')
  macs = summary.count_macs(model, 224)
  assert 2 * macs <= summary.xla_flops(model, 224) <= 1.10 * 2 * macs


def test_create_model_rejects_unknown_names_and_fields():
  with pytest.raises(ValueError, match="Unknown model 'smt_x'"):
    create_model('smt_x')
  with pytest.raises(ValueError, match='embed_dim\\b'):
    create_model('smt_t', embed_dim=(1, 2, 3, 4))


def test_layer_scale_only_in_smt_l():
  assert create_model('smt_l').use_layerscale
  assert not any(create_model(n).use_layerscale for n in ('smt_t', 'smt_s', 'smt_b'))


def test_num_classes_zero_returns_pooled_features(tiny):
  model, variables, images = tiny
  model = model.clone(num_classes=0)
  params = {k: v for k, v in variables['params'].items() if k != 'head'}
  assert jax.eval_shape(model.init, jax.random.PRNGKey(0), images)['params'].keys() == params.keys()
  features = _apply(model, {**variables, 'params': params}, images)
  assert features.shape == (2, 128)


def test_any_input_size_follows_convolution_arithmetic(tiny):
  model, variables, _ = tiny
  maps = _apply(model, variables, jnp.ones((1, 45, 70, 3)), method='features')
  assert [m.shape[1:3] for m in maps] == [(11, 17), (6, 9), (3, 5), (2, 3)]


def test_drop_path_drops_whole_samples_in_train_only():
  x = jnp.ones((64, 4, 4, 8))
  dropped = layers.drop_path(0.5, deterministic=False).apply(
      {}, x, rngs={'dropout': jax.random.PRNGKey(1)})
  per_sample = np.asarray(dropped).reshape(64, -1)
  assert set(np.unique(per_sample.min(1))) <= {0.0, 2.0}
  assert np.all(per_sample.min(1) == per_sample.max(1))  # all-or-nothing per sample
  assert 0 < (per_sample[:, 0] == 0).sum() < 64
  kept = layers.drop_path(0.5, deterministic=True).apply({}, x)
  np.testing.assert_array_equal(kept, x)


def test_train_mode_is_stochastic_and_eval_is_not(tiny):
  model, variables, images = tiny
  model = model.clone(drop_path_rate=0.5)
  run = lambda seed: _apply(model, variables, images, train=True, mutable=('batch_stats',),
                            rngs={'dropout': jax.random.PRNGKey(seed)})[0]
  assert not np.allclose(run(1), run(2))
  np.testing.assert_array_equal(_apply(model, variables, images),
                                _apply(model, variables, images))


def test_batch_stats_update_only_in_train_mode(tiny):
  model, variables, images = tiny
  _, eval_state = _apply(model, variables, images, mutable=('batch_stats',))
  jax.tree.map(np.testing.assert_array_equal, eval_state['batch_stats'],
               variables['batch_stats'])
  _, train_state = _apply(model, variables, images, train=True, mutable=('batch_stats',))
  bn = train_state['batch_stats']['block1_0']['attn']['bn']
  assert int(bn['num_batches_tracked']) == 1
  assert not np.allclose(bn['mean'], variables['batch_stats']['block1_0']['attn']['bn']['mean'])


def test_batch_norm_matches_pytorch_in_train_mode():
  x = np.random.default_rng(0).normal(2.0, 3.0, (4, 5, 6, 8)).astype(np.float32)
  bn = layers.BatchNorm(use_running_average=False)
  variables = bn.init(jax.random.PRNGKey(0), x)
  variables = {'params': {'scale': np.linspace(0.5, 2, 8, dtype=np.float32),
                          'bias': np.linspace(-1, 1, 8, dtype=np.float32)},
               'batch_stats': variables['batch_stats']}
  y, state = bn.apply(variables, x, mutable=('batch_stats',))
  ref = torch.nn.BatchNorm2d(8)
  with torch.no_grad():
    ref.weight.copy_(torch.from_numpy(variables['params']['scale']))
    ref.bias.copy_(torch.from_numpy(variables['params']['bias']))
  ref.train()
  y_ref = ref(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach().numpy()
  np.testing.assert_allclose(y, y_ref, atol=1e-5)
  stats = state['batch_stats']
  np.testing.assert_allclose(stats['mean'], ref.running_mean.numpy(), atol=1e-6)
  np.testing.assert_allclose(stats['var'], ref.running_var.numpy(), rtol=1e-5)
  assert int(stats['num_batches_tracked']) == int(ref.num_batches_tracked)


def test_bfloat16_forward_stays_close_to_float32(tiny):
  model, variables, images = tiny
  with jax.default_matmul_precision('highest'):
    ref = _apply(model, variables, images)
  out = _apply(model.clone(dtype=jnp.bfloat16), variables, images)
  assert out.dtype == jnp.bfloat16
  err = np.abs(np.asarray(out, np.float32) - np.asarray(ref)).max()
  assert err < 0.05 * np.abs(np.asarray(ref)).max()


def test_modulator_and_attention_maps_are_exposed_as_intermediates(tiny):
  model, variables, images = tiny
  _, state = _apply(model, variables, images, mutable=('intermediates',))
  modulator = state['intermediates']['block1_0']['attn']['modulator'][0]
  assert modulator.shape == (2, 16, 16, 16)
  attention = state['intermediates']['block4_0']['attn']
  assert 'modulator' not in attention  # an MSA block: attention maps instead
  maps = attention['attention'][0]
  assert maps.shape == (2, 16, 4, 4)  # (batch, heads, tokens, tokens) on a 2x2 stage-4 map
  np.testing.assert_allclose(maps.sum(-1), 1.0, rtol=1e-5)
