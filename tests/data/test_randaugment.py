"""RandAugment against timm 0.4.12: every op at fixed magnitudes and signs, and the draws.

The reference data comes from timm itself (tests/testdata/timm_transforms, see its README).
"""
import os

import numpy as np
from PIL import Image
import pytest
from scipy import stats

from smt_jax.data import aug_config
from smt_jax.data import randaugment

REFERENCE = np.load(os.path.join(os.path.dirname(__file__), os.pardir, 'testdata',
                                 'timm_transforms', 'reference.npz'))
OP_KEYS = sorted(k for k in REFERENCE.files if k.startswith('op/'))
SIGNED = ('Rotate', 'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel', 'ColorIncreasing',
          'ContrastIncreasing', 'BrightnessIncreasing', 'SharpnessIncreasing')


def _recipe_kwargs():
  aug = aug_config.default_aug_config()
  return dict(num_ops=aug.randaugment_num_ops, magnitude=aug.randaugment_magnitude,
              magnitude_std=aug.randaugment_magnitude_std,
              increasing=aug.randaugment_increasing, op_prob=aug.randaugment_op_prob)


def test_recipe_matches_timm():
  assert randaugment.INCREASING_OP_NAMES == tuple(REFERENCE['recipe_ra_names'])
  assert randaugment.OP_NAMES == tuple(REFERENCE['recipe_ra_plain_names'])
  assert randaugment.IMAGENET_FILL == tuple(REFERENCE['recipe_ra_fillcolor'])
  assert int(REFERENCE['recipe_ra_resample']) == Image.Resampling.BICUBIC
  assert float(REFERENCE['recipe_ra_translate_pct']) == 0.45
  kwargs = _recipe_kwargs()
  assert kwargs == dict(num_ops=int(REFERENCE['recipe_ra_num_layers']),
                        magnitude=float(REFERENCE['recipe_ra_magnitude']),
                        magnitude_std=float(REFERENCE['recipe_ra_magnitude_std']),
                        increasing=True, op_prob=float(REFERENCE['recipe_ra_prob']))


@pytest.mark.parametrize('key', OP_KEYS)
def test_op_equals_timm(key):
  _, name, magnitude, sign = key.split('/')
  image = Image.fromarray(REFERENCE['op_image'])
  out = randaugment.OPS[name](image, float(magnitude), float(sign))
  np.testing.assert_array_equal(np.asarray(out), REFERENCE[key])
  if name not in SIGNED:  # the sign is ignored
    out = randaugment.OPS[name](image, float(magnitude), -float(sign))
    np.testing.assert_array_equal(np.asarray(out), REFERENCE[key])


def test_every_op_is_covered():
  names = {k.split('/')[1] for k in OP_KEYS} | {k.split('/')[0] for k in REFERENCE['op_raises']}
  assert names == set(randaugment.OPS) == (set(randaugment.OP_NAMES) |
                                           set(randaugment.INCREASING_OP_NAMES))
  # Signed ops differ between the signs at a non-zero magnitude.
  for name in SIGNED:
    assert not np.array_equal(REFERENCE[f'op/{name}/9.0/-1'], REFERENCE[f'op/{name}/9.0/1'])


def test_posterize_to_zero_bits_is_black():
  # timm asks for 0 bits here; Pillow 13 refuses, older Pillow (the official training's)
  # kept no bits: a black image.
  assert sorted(REFERENCE['op_raises']) == ['Posterize/0.0/1', 'PosterizeIncreasing/10.0/1']
  image = Image.fromarray(REFERENCE['op_image'])
  for key in REFERENCE['op_raises']:
    name, magnitude, sign = key.split('/')
    out = randaugment.OPS[name](image, float(magnitude), float(sign))
    assert not np.asarray(out).any()


def _record_draws(monkeypatch, num_images):
  """Runs the recipe's RandAugment with recording ops: per image, (op index, magnitude, sign)."""
  names = randaugment.INCREASING_OP_NAMES
  applied = []

  def recorder(index):
    def op(image, magnitude, sign):
      applied.append((index, magnitude, sign if names[index] in SIGNED else 0))
      return image
    return op

  monkeypatch.setattr(randaugment, 'OPS', {n: recorder(i) for i, n in enumerate(names)})
  image = Image.new('RGB', (4, 4))
  rng = np.random.default_rng(0)
  counts = []
  for _ in range(num_images):
    before = len(applied)
    randaugment.randaugment(image, rng, **_recipe_kwargs())
    counts.append(len(applied) - before)
  return np.array(counts), np.array(applied, np.float64)


def test_draws_match_timm_distributions(monkeypatch):
  counts, applied = _record_draws(monkeypatch, len(REFERENCE['draws_ra_count']))
  op, magnitude, sign = applied.T
  timm_op = REFERENCE['draws_ra_op']
  timm_magnitude = REFERENCE['draws_ra_magnitude'].astype(np.float64)
  timm_sign = REFERENCE['draws_ra_sign']
  # Ops applied per image: Binomial(2, 0.5) in both.
  table = [np.bincount(counts, minlength=3), np.bincount(REFERENCE['draws_ra_count'], minlength=3)]
  assert stats.chi2_contingency(table)[1] > 1e-3
  # Which ops: uniform over the set in both.
  table = [np.bincount(op.astype(int), minlength=15), np.bincount(timm_op, minlength=15)]
  assert stats.chi2_contingency(table)[1] > 1e-3
  # Magnitudes of the ops that take one: N(9, 0.5) clipped to [0, 10].
  levelled = ~np.isnan(timm_magnitude)
  timm_levelled_ops = set(timm_op[levelled])
  ours = magnitude[np.isin(op, list(timm_levelled_ops))]
  assert stats.ks_2samp(ours, timm_magnitude[levelled]).pvalue > 1e-3
  assert ours.max() == 10.0 and (ours == 10.0).mean() > 0.01  # clipped, not redrawn
  # Signs: negative half the time, for the signed ops only.
  table = [np.bincount((sign + 1).astype(int), minlength=3),
           np.bincount(timm_sign.astype(int) + 1, minlength=3)]
  assert stats.chi2_contingency(table)[1] > 1e-3


def test_array_in_array_out_and_pil_in_pil_out():
  rng = np.random.default_rng(0)
  array = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
  kwargs = _recipe_kwargs()
  out = randaugment.randaugment(array, np.random.default_rng(5), **kwargs)
  assert isinstance(out, np.ndarray) and out.shape == array.shape and out.dtype == np.uint8
  pil = randaugment.randaugment(Image.fromarray(array), np.random.default_rng(5), **kwargs)
  assert isinstance(pil, Image.Image)
  np.testing.assert_array_equal(np.asarray(pil), out)


def test_same_seed_same_output_and_seeds_differ():
  array = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
  kwargs = dict(_recipe_kwargs(), op_prob=1.0)
  outs = [randaugment.randaugment(array, np.random.default_rng(s), **kwargs) for s in range(8)]
  again = randaugment.randaugment(array, np.random.default_rng(3), **kwargs)
  np.testing.assert_array_equal(again, outs[3])
  assert len({o.tobytes() for o in outs}) == 8


def test_switched_off():
  array = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
  for change in (dict(num_ops=0), dict(op_prob=0.0)):
    out = randaugment.randaugment(array, np.random.default_rng(0),
                                  **dict(_recipe_kwargs(), **change))
    np.testing.assert_array_equal(out, array)
