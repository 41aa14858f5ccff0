"""RandAugment: every op against PIL, the op set and sampling of timm's rand-m9-mstd0.5-inc1."""
import numpy as np
from PIL import Image, ImageEnhance, ImageOps
import pytest
import tensorflow as tf

from smt_jax.data import randaugment

FILL = randaugment.IMAGENET_FILL


@pytest.fixture(scope='module')
def image():
  rng = np.random.default_rng(0)
  y, x = np.mgrid[0:37, 0:53]
  base = np.stack([(4 * x + 2 * y) % 256, (6 * y) % 256, (x * y) % 256], -1)
  return np.clip(base + rng.integers(-20, 20, base.shape), 30, 220).astype(np.uint8)


def _affine(pil, matrix):
  return pil.transform(pil.size, Image.AFFINE, matrix, resample=Image.BILINEAR,
                       fillcolor=FILL)


# (our op, PIL reference): values equal PIL's exactly (lookup tables, blends) or, for the
# geometric ops, within 1 (float32 here, float64 in PIL).
CASES = {
    'auto_contrast': (randaugment.auto_contrast, ImageOps.autocontrast, 0),
    'equalize': (randaugment.equalize, ImageOps.equalize, 0),
    'invert': (randaugment.invert, ImageOps.invert, 0),
    'posterize': (lambda x: randaugment.posterize(x, tf.constant(3)),
                  lambda p: ImageOps.posterize(p, 3), 0),
    'solarize': (lambda x: randaugment.solarize(x, tf.constant(100)),
                 lambda p: ImageOps.solarize(p, 100), 0),
    'color': (lambda x: randaugment.color(x, 1.7), lambda p: ImageEnhance.Color(p).enhance(1.7), 0),
    'contrast': (lambda x: randaugment.contrast(x, 0.3),
                 lambda p: ImageEnhance.Contrast(p).enhance(0.3), 0),
    'brightness': (lambda x: randaugment.brightness(x, 1.4),
                   lambda p: ImageEnhance.Brightness(p).enhance(1.4), 0),
    'sharpness': (lambda x: randaugment.sharpness(x, 1.9),
                  lambda p: ImageEnhance.Sharpness(p).enhance(1.9), 0),
    'rotate': (lambda x: randaugment.rotate(x, tf.constant(-23.0)),
               lambda p: p.rotate(-23.0, resample=Image.BILINEAR, fillcolor=FILL), 1),
    'shear_x': (lambda x: randaugment.shear_x(x, 0.21),
                lambda p: _affine(p, (1, 0.21, 0, 0, 1, 0)), 1),
    'shear_y': (lambda x: randaugment.shear_y(x, -0.3),
                lambda p: _affine(p, (1, 0, 0, -0.3, 1, 0)), 1),
    'translate_x': (lambda x: randaugment.translate_x(x, 7.6),
                    lambda p: _affine(p, (1, 0, 7.6, 0, 1, 0)), 1),
    'translate_y': (lambda x: randaugment.translate_y(x, -10.3),
                    lambda p: _affine(p, (1, 0, 0, 0, 1, -10.3)), 1),
}


@pytest.mark.parametrize('name', sorted(CASES))
def test_op_matches_pil(image, name):
  ours, reference, tolerance = CASES[name]
  got = np.asarray(ours(tf.constant(image))).astype(int)
  want = np.asarray(reference(Image.fromarray(image))).astype(int)
  assert got.shape == want.shape
  assert np.abs(got - want).max() <= tolerance


def test_solarize_add_and_posterize_extremes(image):
  out = randaugment.solarize_add(tf.constant(image), 99).numpy().astype(int)
  expected = np.where(image < 128, np.minimum(image.astype(int) + 99, 255), image)
  np.testing.assert_array_equal(out, expected)
  assert not randaugment.posterize(tf.constant(image), tf.constant(0)).numpy().any()


def test_increasing_op_set_is_timms():
  assert randaugment.op_names(increasing=True) == [
      'AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize', 'SolarizeAdd',
      'Color', 'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY', 'TranslateXRel',
      'TranslateYRel']


def test_randaugment_is_stateless_and_keeps_shape(image):
  augment = tf.function(lambda x, s: randaugment.randaugment(x, s), autograph=False)
  outs = [augment(tf.constant(image), tf.constant([i, 9], tf.int64)).numpy()
          for i in range(24)]
  assert all(o.shape == image.shape and o.dtype == np.uint8 for o in outs)
  again = augment(tf.constant(image), tf.constant([5, 9], tf.int64)).numpy()
  np.testing.assert_array_equal(again, outs[5])
  # Each of two ops applies with p=0.5: about a quarter of images come out untouched.
  untouched = sum(np.array_equal(o, image) for o in outs)
  assert 1 <= untouched <= 14
  assert len({o.tobytes() for o in outs}) > 10


def test_randaugment_with_op_prob_zero_is_identity(image):
  out = randaugment.randaugment(tf.constant(image), tf.constant([1, 2], tf.int64), op_prob=0.0)
  np.testing.assert_array_equal(out, image)
