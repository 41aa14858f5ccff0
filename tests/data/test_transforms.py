"""Decode, crops and resizes: timm / torchvision geometry, PIL-like values."""
import io

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from smt_jax.data import transforms

SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


def _photo(height, width, seed=0):
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (height // 16 + 2, width // 16 + 2, 3)).astype(np.uint8)
  return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def _encode(image, fmt):
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, fmt)
  return buffer.getvalue()


def test_random_crop_window_follows_timm():
  windows = np.stack([transforms.random_crop_window(tf.constant([300, 400, 3]),
                                                    tf.constant([i, 1], tf.int64),
                                                    SCALE, RATIO).numpy()
                      for i in range(200)])
  top, left, h, w = windows.T
  assert (top >= 0).all() and (left >= 0).all()
  assert (top + h <= 300).all() and (left + w <= 400).all()
  area = h * w / (300 * 400)
  assert area.min() >= 0.075 and area.max() <= 1.0
  aspect = w / h
  assert aspect.min() > 0.7 and aspect.max() < 1.43
  assert len({tuple(row) for row in windows}) > 190  # random
  again = transforms.random_crop_window(tf.constant([300, 400, 3]),
                                        tf.constant([7, 1], tf.int64), SCALE, RATIO)
  np.testing.assert_array_equal(again, windows[7])  # stateless


def test_random_crop_window_falls_back_to_a_central_crop():
  # A 10x1000 strip: no draw fits, so timm takes the central crop at the widest ratio.
  window = transforms.random_crop_window(tf.constant([10, 1000, 3]),
                                         tf.constant([0, 0], tf.int64), SCALE, RATIO)
  np.testing.assert_array_equal(window, [0, (1000 - 13) // 2, 10, 13])


@pytest.mark.parametrize('fmt', ['JPEG', 'PNG'])
def test_decode_random_resized_crop(fmt):
  data = tf.constant(_encode(_photo(60, 80), fmt))
  seed = tf.constant([3, 4], tf.int64)
  image = transforms.decode_random_resized_crop(data, seed, 32, SCALE, RATIO)
  assert image.shape == (32, 32, 3) and image.dtype == tf.uint8
  # Decoding only the window equals decoding everything and cropping.
  top, left, h, w = transforms.random_crop_window(tf.constant([60, 80, 3]), seed, SCALE,
                                                  RATIO).numpy()
  full = transforms.decode(data)[top:top + h, left:left + w]
  np.testing.assert_array_equal(image, transforms.resize(full, 32, 32))


def test_resize_matches_pil_bicubic():
  image = _photo(300, 400)
  ours = transforms.resize(image, 256, 341).numpy().astype(int)
  pil = np.asarray(Image.fromarray(image).resize((341, 256), Image.BICUBIC)).astype(int)
  assert np.abs(ours - pil).max() <= 3 and np.abs(ours - pil).mean() < 0.5


def test_eval_resize_shorter_side_and_center_crop():
  image = _photo(300, 400)
  out = transforms.eval_image(tf.constant(image), 224, 0.875, crop=True)
  assert out.shape == (224, 224, 3)
  # torchvision: Resize(256) -> 256x341, CenterCrop(224) -> top 16, left round(58.5) = 58.
  resized = transforms.resize(image, 256, 341)
  np.testing.assert_array_equal(out, resized[16:240, 58:282])
  tall = transforms.resize_shorter_side(tf.constant([500, 375, 3]), 256)
  assert [int(v) for v in tall] == [341, 256]


def test_eval_square_resize_for_the_384_finetune():
  image = _photo(300, 400)
  out = transforms.eval_image(tf.constant(image), 48, 0.875, crop=False)
  np.testing.assert_array_equal(out, transforms.resize(image, 48, 48))


def test_flip_is_stateless():
  image = tf.constant(_photo(8, 8))
  flips = [bool(np.array_equal(transforms.random_flip(image, tf.constant([i, 0], tf.int64)),
                               image[:, ::-1])) for i in range(100)]
  assert 30 < sum(flips) < 70
  assert flips == [bool(np.array_equal(
      transforms.random_flip(image, tf.constant([i, 0], tf.int64)), image[:, ::-1]))
      for i in range(100)]
