"""Device-side augmentation: normalization, random erasing, Mixup/CutMix soft targets."""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from . import data_testing
from smt_jax.data import device_augment

NUM_CLASSES = 10


def test_normalize():
  images = jnp.array([[[[0, 0, 0], [255, 255, 255]]]], jnp.uint8)
  out = device_augment.normalize(images)
  mean = np.array(device_augment.IMAGENET_MEAN)
  std = np.array(device_augment.IMAGENET_STD)
  np.testing.assert_allclose(out[0, 0, 0], -mean / std, rtol=1e-6)
  np.testing.assert_allclose(out[0, 0, 1], (1 - mean) / std, rtol=1e-6)
  assert device_augment.normalize(images, jnp.bfloat16).dtype == jnp.bfloat16


def test_random_erasing_rate_and_boxes():
  images = jnp.full((4000, 16, 16, 3), 100.0)
  out = np.asarray(jax.jit(device_augment.random_erasing)(jax.random.key(0), images))
  erased = (out != 100.0).any(-1)
  rate = erased.any((1, 2)).mean()
  # p=0.25, less the rare images where none of the ten boxes fits.
  assert 0.22 < rate < 0.27
  area = erased.reshape(len(out), -1).mean(1)
  area = area[area > 0]
  assert area.min() >= 0.01 and area.max() <= 0.4  # 0.02 to 1/3, rounded to pixels
  # One box: erased rows (and columns) are contiguous and fully erased across the box.
  for mask in erased[erased.any((1, 2))][:50]:
    r = np.flatnonzero(mask.any(1))
    c = np.flatnonzero(mask.any(0))
    assert mask[r[0]:r[-1] + 1, c[0]:c[-1] + 1].all() and mask.sum() == len(r) * len(c)
  noise = out[erased]
  assert abs(noise.mean()) < 0.05 and abs(noise.std() - 1) < 0.05


@functools.partial(jax.jit, static_argnames=('mixup_alpha', 'cutmix_alpha'))
def _mix(rng, images, labels, mixup_alpha=0.2, cutmix_alpha=1.0):
  return device_augment.mixup_cutmix(rng, images, labels, NUM_CLASSES, mixup_alpha=mixup_alpha,
                                     cutmix_alpha=cutmix_alpha, prob=1.0, switch_prob=0.5,
                                     label_smoothing=0.1)


def _identity_batch(batch=8, size=16):
  """Example i is constant i + 1 and has label i, so mixed pixels reveal their source."""
  values = jnp.arange(1, batch + 1, dtype=jnp.float32)
  return (jnp.broadcast_to(values[:, None, None, None], (batch, size, size, 3)),
          jnp.arange(batch) % NUM_CLASSES)


def _lambda(targets, labels, smoothing=0.1):
  off = smoothing / NUM_CLASSES
  own = np.take_along_axis(np.asarray(targets), np.asarray(labels)[:, None], 1)[:, 0]
  return (own - off) / (1 - smoothing)


def test_soft_targets_sum_to_one_and_are_smoothed():
  images, labels = _identity_batch()
  for seed in range(6):
    _, targets = _mix(jax.random.key(seed), images, labels)
    np.testing.assert_allclose(np.asarray(targets).sum(1), 1.0, rtol=1e-5)
    assert np.asarray(targets).min() >= 0.1 / NUM_CLASSES - 1e-7


def test_smoothing_only_when_mixing_is_off():
  images, labels = _identity_batch()
  out, targets = _mix(jax.random.key(0), images, labels, mixup_alpha=0.0, cutmix_alpha=0.0)
  np.testing.assert_array_equal(out, images)
  expected = np.full((8, NUM_CLASSES), 0.01)
  expected[np.arange(8), np.asarray(labels)] = 0.91
  np.testing.assert_allclose(targets, expected, rtol=1e-6)


def test_cutmix_box_area_agrees_with_lambda():
  images, labels = _identity_batch()
  partner = np.arange(8) ^ 1
  for seed in range(8):
    out, targets = _mix(jax.random.key(seed), images, labels, mixup_alpha=0.0)
    out = np.asarray(out)[..., 0]
    lam = _lambda(targets, labels)
    np.testing.assert_allclose(lam, lam[0], atol=1e-6)  # one lambda per batch
    from_partner = (out == (partner + 1)[:, None, None]).mean((1, 2))
    from_self = (out == (np.arange(8) + 1)[:, None, None]).mean((1, 2))
    np.testing.assert_allclose(from_partner, 1 - lam, atol=1e-6)
    np.testing.assert_allclose(from_self + from_partner, 1.0)
    # The pasted region is one rectangle, the same in every image.
    pasted = out[0] == 2
    r, c = np.flatnonzero(pasted.any(1)), np.flatnonzero(pasted.any(0))
    assert pasted.sum() == len(r) * len(c)
    np.testing.assert_array_equal(out[2] == 4, pasted)


def test_mixup_blends_with_the_partner():
  images, labels = _identity_batch()
  partner = np.arange(8) ^ 1
  for seed in range(4):
    out, targets = _mix(jax.random.key(seed), images, labels, cutmix_alpha=0.0)
    lam = _lambda(targets, labels)
    expected = lam * (np.arange(8) + 1) + (1 - lam) * (partner + 1)
    np.testing.assert_allclose(np.asarray(out)[:, 0, 0, 0], expected, rtol=1e-5)


def test_switch_between_mixup_and_cutmix():
  images, labels = _identity_batch()
  kinds = []
  for seed in range(40):
    out, _ = _mix(jax.random.key(seed), images, labels)
    values = np.unique(np.asarray(out)[0])
    kinds.append('cutmix' if set(values) <= {1.0, 2.0} else 'mixup')
  assert 10 < kinds.count('cutmix') < 30


def test_prepare_is_deterministic_and_shaped():
  config = data_testing.make_config()
  prepare = jax.jit(device_augment.make_prepare(config.aug, NUM_CLASSES))
  batch = {'image': jnp.asarray(np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3)),
                                jnp.uint8),
           'label': jnp.arange(6, dtype=jnp.int32)}
  images, targets = prepare(jax.random.key(3), batch)
  assert images.shape == (6, 8, 8, 3) and images.dtype == jnp.float32
  assert targets.shape == (6, NUM_CLASSES) and targets.dtype == jnp.float32
  again = prepare(jax.random.key(3), batch)
  np.testing.assert_array_equal(images, again[0])
  np.testing.assert_array_equal(targets, again[1])
  other = prepare(jax.random.key(4), batch)
  assert not np.array_equal(images, other[0])
