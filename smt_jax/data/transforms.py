"""Per-image decode, crop, resize and flip in TensorFlow, with the reference's geometry.

Train crops follow timm's `RandomResizedCropAndInterpolation`; evaluation follows the
official SMT code (torchvision `Resize` + `CenterCrop`, or a square `Resize`). JPEGs in the
training path are decoded only inside the crop window (`decode_and_crop_jpeg`), which saves
most of the decode time on ImageNet-sized images. Resizing is bicubic with antialiasing, as
PIL's bicubic resize is (values agree within a few levels), rounded back to uint8.

The random functions are stateless: they take a `seed` tensor of shape [2] and give the same
output for the same seed.
"""
import math
from typing import Sequence, Tuple

import tensorflow as tf

_CROP_ATTEMPTS = 10


def resize(image: tf.Tensor, height, width) -> tf.Tensor:
  """Bicubic, antialiased resize of a uint8 image, rounded back to uint8."""
  out = tf.image.resize(image, tf.stack([height, width]), method='bicubic', antialias=True)
  return tf.cast(tf.round(tf.clip_by_value(out, 0.0, 255.0)), tf.uint8)


def random_crop_window(shape: tf.Tensor, seed: tf.Tensor, scale: Sequence[float],
                       ratio: Sequence[float]) -> tf.Tensor:
  """[top, left, height, width] of a random resized crop of an image of `shape` [h, w, ...].

  Up to ten (area, log-aspect) draws; the first one that fits wins; if none fits, the
  largest central crop whose aspect ratio is within `ratio` (timm's fallback).
  """
  img_h = tf.cast(shape[0], tf.float32)
  img_w = tf.cast(shape[1], tf.float32)
  seeds = tf.random.experimental.stateless_split(seed, 4)
  area = img_h * img_w * tf.random.stateless_uniform(
      [_CROP_ATTEMPTS], seeds[0], scale[0], scale[1])
  log_ratio = tf.random.stateless_uniform(
      [_CROP_ATTEMPTS], seeds[1], math.log(ratio[0]), math.log(ratio[1]))
  aspect = tf.exp(log_ratio)
  w = tf.maximum(tf.round(tf.sqrt(area * aspect)), 1.0)
  h = tf.maximum(tf.round(tf.sqrt(area / aspect)), 1.0)
  fits = (w <= img_w) & (h <= img_h)
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  # randint(0, img - size) inclusive, as Python's random.randint.
  top = tf.floor(tf.random.stateless_uniform([_CROP_ATTEMPTS], seeds[2]) * (img_h - h + 1))
  left = tf.floor(tf.random.stateless_uniform([_CROP_ATTEMPTS], seeds[3]) * (img_w - w + 1))
  drawn = tf.stack([top[first], left[first], h[first], w[first]])

  in_ratio = img_w / img_h
  fb_w = tf.where(in_ratio < min(ratio), img_w,
                  tf.where(in_ratio > max(ratio), tf.round(img_h * max(ratio)), img_w))
  fb_h = tf.where(in_ratio < min(ratio), tf.round(img_w / min(ratio)), img_h)
  fallback = tf.stack([tf.floor((img_h - fb_h) / 2), tf.floor((img_w - fb_w) / 2), fb_h, fb_w])
  return tf.cast(tf.where(tf.reduce_any(fits), drawn, fallback), tf.int32)


def _decode_crop(data: tf.Tensor, window_fn) -> tf.Tensor:
  """Decodes the encoded image `data` cropped to `window_fn(shape)` as uint8 RGB."""

  def jpeg():
    window = window_fn(tf.image.extract_jpeg_shape(data))
    return tf.image.decode_and_crop_jpeg(data, window, channels=3,
                                         dct_method='INTEGER_ACCURATE')

  def other():
    image = tf.io.decode_image(data, channels=3, expand_animations=False)
    window = window_fn(tf.shape(image))
    return tf.slice(image, [window[0], window[1], 0], [window[2], window[3], 3])

  return tf.cond(tf.io.is_jpeg(data), jpeg, other)


def decode(data: tf.Tensor) -> tf.Tensor:
  """Decodes JPEG, PNG, GIF (first frame) or BMP bytes to uint8 RGB."""
  return tf.cond(
      tf.io.is_jpeg(data),
      lambda: tf.io.decode_jpeg(data, channels=3, dct_method='INTEGER_ACCURATE'),
      lambda: tf.io.decode_image(data, channels=3, expand_animations=False))


def decode_random_resized_crop(data: tf.Tensor, seed: tf.Tensor, image_size: int,
                               scale: Sequence[float], ratio: Sequence[float]) -> tf.Tensor:
  """Training crop: decode only a random window, resize it to image_size squared."""
  image = _decode_crop(data, lambda shape: random_crop_window(shape, seed, scale, ratio))
  return tf.ensure_shape(resize(image, image_size, image_size), [image_size, image_size, 3])


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  return tf.image.stateless_random_flip_left_right(image, seed)


def resize_shorter_side(shape: tf.Tensor, size: int) -> Tuple[tf.Tensor, tf.Tensor]:
  """torchvision `Resize(size)`: the shorter side becomes `size`, the longer one truncates."""
  h, w = shape[0], shape[1]
  short = tf.minimum(h, w)
  long = tf.cast(size * tf.cast(tf.maximum(h, w), tf.float64) / tf.cast(short, tf.float64),
                 tf.int32)
  return (tf.where(h <= w, size, long), tf.where(h <= w, long, size))


def center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  """torchvision `CenterCrop(size)`: offsets round half to even, as Python's round."""
  shape = tf.shape(image)
  top = tf.cast(tf.round(tf.cast(shape[0] - size, tf.float32) / 2), tf.int32)
  left = tf.cast(tf.round(tf.cast(shape[1] - size, tf.float32) / 2), tf.int32)
  return tf.slice(image, [top, left, 0], [size, size, 3])


def eval_image(image: tf.Tensor, image_size: int, crop_pct: float, crop: bool) -> tf.Tensor:
  """Evaluation geometry of a decoded uint8 image (see `default_aug_config`)."""
  if crop:
    h, w = resize_shorter_side(tf.shape(image), int(image_size / crop_pct))
    image = center_crop(resize(image, h, w), image_size)
  else:
    image = resize(image, image_size, image_size)
  return tf.ensure_shape(image, [image_size, image_size, 3])
