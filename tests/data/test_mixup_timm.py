"""smt_jax's Mixup/CutMix against timm's `Mixup` in the official settings.

tests/testdata/recipe_trajectory/mixup_draws.npz holds 20,000 batch draws of timm 0.4.12's
`Mixup` as the official code builds it (mixup_alpha 0.2, cutmix_alpha 1.0, prob 1.0,
switch_prob 0.5, mode 'batch', label smoothing 0.1) at 32x32, and one CutMix and one Mixup
batch as timm mixes them (see make_trajectory.py there). Pairing differs on purpose: timm
mixes example i with B-1-i, smt_jax 2k with 2k+1; reordered so that the partners agree,
the mixed batches are timm's, and over many draws every example's statistics are timm's.
"""
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smt_jax.data import default_aug_config
from smt_jax.data import device_augment

DRAWS = pathlib.Path(__file__).resolve().parents[1] / 'testdata' / 'recipe_trajectory' / (
    'mixup_draws.npz')
NUM_OURS = 20000


@pytest.fixture(scope='module')
def timm():
  with np.load(DRAWS) as data:
    return {k: data[k] for k in data.files}


def _official_kwargs():
  """smt_jax's default augmentation settings: these must be the official ones."""
  aug = default_aug_config()
  return dict(mixup_alpha=aug.mixup_alpha, cutmix_alpha=aug.cutmix_alpha, prob=aug.mixup_prob,
              switch_prob=aug.mixup_switch_prob)


@pytest.fixture(scope='module')
def ours(timm):
  size = int(timm['image_size'])
  draw = jax.jit(jax.vmap(lambda k: device_augment.draw_mix(k, size, size, **_official_kwargs())))
  params = jax.device_get(draw(jax.random.split(jax.random.key(0), NUM_OURS)))
  y0, y1, x0, x1 = params.box
  return {'use_cutmix': params.use_cutmix, 'lam_corrected': params.lam,
          'box': np.stack([y0, y1, x0, x1], 1)}


def _assert_same_distribution(a, b, name):
  """Two-sample Kolmogorov-Smirnov test at the 0.1% level."""
  a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
  points = np.concatenate([a, b])
  distance = np.max(np.abs(np.searchsorted(a, points, 'right') / len(a)
                           - np.searchsorted(b, points, 'right') / len(b)))
  critical = 1.95 * np.sqrt((len(a) + len(b)) / (len(a) * len(b)))
  assert distance < critical, f'{name}: KS distance {distance:.4f} >= {critical:.4f}'


def test_switch_probability_matches(ours, timm):
  p_ours, p_timm = ours['use_cutmix'].mean(), timm['use_cutmix'].mean()
  sigma = np.sqrt(0.25 * (1 / NUM_OURS + 1 / len(timm['use_cutmix'])))
  assert abs(p_ours - p_timm) < 5 * sigma, (p_ours, p_timm)


def test_mixup_lambda_distribution_matches(ours, timm):
  _assert_same_distribution(ours['lam_corrected'][~ours['use_cutmix']],
                            timm['lam'][~timm['use_cutmix']], 'Mixup lambda')


def test_cutmix_box_and_corrected_lambda_match(ours, timm):
  cut_ours, cut_timm = ours['use_cutmix'], timm['use_cutmix']
  for i, side in enumerate(('top', 'bottom', 'left', 'right')):
    _assert_same_distribution(ours['box'][cut_ours, i], timm['box'][cut_timm, i], side)
  height = lambda box: box[:, 1] - box[:, 0]
  _assert_same_distribution(height(ours['box'][cut_ours]), height(timm['box'][cut_timm]),
                            'box height')
  _assert_same_distribution(ours['lam_corrected'][cut_ours], timm['lam_corrected'][cut_timm],
                            'CutMix corrected lambda')
  box = ours['box'][cut_ours]
  area = (box[:, 1] - box[:, 0]) * (box[:, 3] - box[:, 2]) / int(timm['image_size']) ** 2
  np.testing.assert_allclose(ours['lam_corrected'][cut_ours], 1 - area, atol=1e-6)


def test_each_examples_weight_and_pixels_follow_timms_lambda(timm):
  """Per example, over many draws of the whole function: the weight of its own target is
  distributed as timm's lambda, and its pixels agree with that weight."""
  size, batch, num_classes, draws = int(timm['image_size']), 4, 4, 4000
  images = jnp.broadcast_to(jnp.arange(1.0, batch + 1)[:, None, None, None],
                            (batch, size, size, 1))
  labels = jnp.arange(batch)
  mix = jax.jit(jax.vmap(lambda k: device_augment.mixup_cutmix(
      k, images, labels, num_classes, label_smoothing=0.1, **_official_kwargs())))
  mixed, targets = jax.device_get(mix(jax.random.split(jax.random.key(1), draws)))
  off = 0.1 / num_classes
  partner = np.arange(batch) ^ 1
  for i in range(batch):
    weight = (targets[:, i, i] - off) / (1 - 0.1)
    _assert_same_distribution(weight, timm['lam_corrected'], f'example {i} weight')
    own = (mixed[:, i, ..., 0] == i + 1).mean((1, 2))
    pasted = (mixed[:, i, ..., 0] == partner[i] + 1).mean((1, 2))
    cutmix = own + pasted == 1
    np.testing.assert_allclose(own[cutmix], weight[cutmix], atol=1e-6)
    blend = weight[~cutmix] * (i + 1) + (1 - weight[~cutmix]) * (partner[i] + 1)
    np.testing.assert_allclose(mixed[~cutmix, i, 0, 0, 0], blend, rtol=1e-5)


def test_paired_as_timm_pairs_the_mixed_batches_are_timms(timm):
  labels = timm['batch_labels']
  batch, num_classes = len(labels), timm['batch_mixed_targets'].shape[-1]
  order = np.ravel([[k, batch - 1 - k] for k in range(batch // 2)])  # timm's i, B-1-i
  targets = device_augment.smooth_one_hot(labels[order], num_classes, 0.1)
  kinds = []
  for use_cutmix, lam, box, images, soft in zip(
      timm['batch_mixed_use_cutmix'], timm['batch_mixed_lam'], timm['batch_mixed_box'],
      timm['batch_mixed_images'], timm['batch_mixed_targets']):
    params = device_augment.MixParams(jnp.asarray(use_cutmix), jnp.float32(lam),
                                      tuple(jnp.int32(b) for b in box))
    ours_images, ours_targets = device_augment.apply_mix(
        jnp.asarray(timm['batch_images'][order]), targets, params)
    np.testing.assert_allclose(ours_images, images[order], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ours_targets, soft[order], rtol=1e-6, atol=1e-7)
    kinds.append(bool(use_cutmix))
  assert kinds == [True, False]
