"""RandAugment on uint8 images in TensorFlow, with the semantics of timm's `rand_augment_transform`.

The official recipe `rand-m9-mstd0.5-inc1` means: two ops per image, each drawn uniformly
(with replacement) from the 'increasing' op set and applied with probability 0.5, at a
magnitude drawn per op from N(9, 0.5) and clipped to [0, 10]; signed ops (rotate, shear,
translate, enhance) flip sign with probability 0.5. The ops reproduce PIL's arithmetic
(ImageOps / ImageEnhance lookup tables, blend truncation, 3x3 SMOOTH kernel, pixel-corner
affine coordinates): the pixel ops equal PIL's exactly and the geometric ones within 1
(tests/data/test_randaugment.py). One difference is deliberate: rotate, shear and translate
interpolate bilinearly, because TensorFlow's projective transform has no bicubic mode (timm
passes bicubic). Areas moved in from outside the image take the ImageNet mean colour, as in
timm.
"""
import functools
import math
from typing import Callable, List, Sequence, Tuple

import tensorflow as tf

# timm's `img_mean` fill: round(255 * ImageNet mean).
IMAGENET_FILL = (124, 116, 104)

_MAX_LEVEL = 10.0
_Op = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], tf.Tensor]


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
  return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)


def _apply_lut(image: tf.Tensor, lut: tf.Tensor) -> tf.Tensor:
  """Per-channel lookup: `lut` is [3, 256] int32 with values in [0, 255]."""
  flat = tf.cast(image, tf.int32) + tf.range(3) * 256
  return tf.cast(tf.gather(tf.reshape(lut, [-1]), flat), tf.uint8)


def _histograms(image: tf.Tensor) -> tf.Tensor:
  """[3, 256] int32 per-channel histograms."""
  channels = tf.transpose(tf.reshape(tf.cast(image, tf.int32), [-1, 3]))
  return tf.math.bincount(channels, minlength=256, maxlength=256, axis=-1)


def _grayscale(image: tf.Tensor) -> tf.Tensor:
  """PIL's RGB -> L conversion (ITU-R 601-2 luma, fixed point), as int32 [H, W]."""
  rgb = tf.cast(image, tf.int32)
  return (rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) // 65536


def _blend(degenerate: tf.Tensor, image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL `Image.blend(degenerate, image, factor)`: clipped, then truncated to uint8."""
  degenerate = tf.cast(degenerate, tf.float32)
  out = degenerate + factor * (tf.cast(image, tf.float32) - degenerate)
  return tf.cast(tf.floor(tf.clip_by_value(out, 0.0, 255.0)), tf.uint8)


def auto_contrast(image: tf.Tensor) -> tf.Tensor:
  """PIL `ImageOps.autocontrast`: stretch each channel's [min, max] to [0, 255]."""
  channels = tf.reshape(image, [-1, 3])
  lo = tf.cast(tf.reduce_min(channels, axis=0), tf.float64)[:, None]
  hi = tf.cast(tf.reduce_max(channels, axis=0), tf.float64)[:, None]
  ix = tf.range(256, dtype=tf.float64)[None]
  scale = 255.0 / tf.maximum(hi - lo, 1.0)
  lut = tf.clip_by_value(tf.cast(ix * scale - lo * scale, tf.int32), 0, 255)  # int() truncates
  lut = tf.where(hi > lo, lut, tf.cast(ix, tf.int32))
  return _apply_lut(image, lut)


def equalize(image: tf.Tensor) -> tf.Tensor:
  """PIL `ImageOps.equalize`, per channel."""
  hist = _histograms(image)
  last_nonzero = tf.reduce_max(tf.where(hist > 0, tf.range(256), 0), axis=1)
  last_count = tf.gather(hist, last_nonzero, batch_dims=1)
  step = (tf.reduce_sum(hist, axis=1) - last_count) // 255
  cum_before = tf.cumsum(hist, axis=1, exclusive=True)
  safe_step = tf.maximum(step, 1)[:, None]
  lut = tf.minimum((cum_before + safe_step // 2) // safe_step, 255)
  lut = tf.where(step[:, None] > 0, lut, tf.range(256)[None])
  return _apply_lut(image, lut)


def invert(image: tf.Tensor) -> tf.Tensor:
  return 255 - image


def posterize(image: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
  """Keeps the `bits` (0 to 8) most significant bits of every value."""
  mask = tf.bitwise.bitwise_and(tf.bitwise.left_shift(255, 8 - bits), 255)
  return tf.bitwise.bitwise_and(image, tf.cast(mask, tf.uint8))


def solarize(image: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
  """Inverts every value at or above `threshold` (0 to 256)."""
  return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(image: tf.Tensor, addition: tf.Tensor, threshold: int = 128) -> tf.Tensor:
  """timm's `solarize_add`: adds `addition` (saturating) to every value below `threshold`."""
  values = tf.cast(image, tf.int32)
  return tf.cast(tf.where(values < threshold, tf.minimum(values + addition, 255), values),
                 tf.uint8)


def color(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL `ImageEnhance.Color`: blend with the grayscale image."""
  gray = tf.repeat(_grayscale(image)[..., None], 3, axis=-1)
  return _blend(gray, image, factor)


def contrast(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL `ImageEnhance.Contrast`: blend with the mean grey level (rounded)."""
  mean = tf.floor(tf.reduce_mean(tf.cast(_grayscale(image), tf.float32)) + 0.5)
  return _blend(tf.fill(tf.shape(image), mean), image, factor)


def brightness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL `ImageEnhance.Brightness`: blend with black."""
  return _blend(tf.zeros_like(image), image, factor)


def sharpness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
  """PIL `ImageEnhance.Sharpness`: blend with the SMOOTH-filtered image (border kept)."""
  kernel = tf.constant([[1., 1., 1.], [1., 5., 1.], [1., 1., 1.]]) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  smooth = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel,
                                  strides=[1, 1, 1, 1], padding='VALID')[0]
  smooth = tf.pad(_to_uint8(smooth), [[1, 1], [1, 1], [0, 0]])
  interior = tf.pad(tf.ones_like(smooth[1:-1, 1:-1, :1], tf.bool), [[1, 1], [1, 1], [0, 0]])
  return _blend(tf.where(interior, smooth, image), image, factor)


def affine(image: tf.Tensor, matrix: Sequence[tf.Tensor],
           fill: Sequence[int] = IMAGENET_FILL) -> tf.Tensor:
  """PIL `Image.transform(AFFINE, matrix, BILINEAR)`: output (x, y) samples (ax+by+c, dx+ey+f).

  PIL measures coordinates from pixel corners, the projective transform op from pixel
  centres, hence the half-pixel terms. Like PIL, a sample whose point lies outside the image
  takes the fill colour, one inside interpolates with edge pixels repeated, and the result is
  truncated to uint8.
  """
  a, b, c, d, e, f = [tf.cast(v, tf.float32) for v in matrix]
  transform = tf.stack([a, b, c + 0.5 * (a + b) - 0.5, d, e, f + 0.5 * (d + e) - 0.5, 0., 0.])

  def warp(images, interpolation, fill_mode):
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images[None], transforms=transform[None], output_shape=tf.shape(image)[:2],
        fill_value=0.0, interpolation=interpolation, fill_mode=fill_mode)[0]

  inside = warp(tf.ones_like(image[..., :1], tf.float32), 'NEAREST', 'CONSTANT') > 0
  values = warp(tf.cast(image, tf.float32), 'BILINEAR', 'NEAREST')
  out = tf.where(inside, tf.floor(values), tf.constant(fill, tf.float32))
  return tf.cast(tf.clip_by_value(out, 0.0, 255.0), tf.uint8)


def rotate(image: tf.Tensor, degrees: tf.Tensor, fill: Sequence[int] = IMAGENET_FILL):
  """PIL `Image.rotate(degrees)`: counter-clockwise about the image centre."""
  shape = tf.cast(tf.shape(image), tf.float32)
  cx, cy = shape[1] / 2, shape[0] / 2
  angle = -degrees * (math.pi / 180.0)
  cos, sin = tf.cos(angle), tf.sin(angle)
  return affine(image, [cos, sin, cx - cos * cx - sin * cy,
                        -sin, cos, cy + sin * cx - cos * cy], fill)


def shear_x(image, factor, fill=IMAGENET_FILL):
  return affine(image, [1., factor, 0., 0., 1., 0.], fill)


def shear_y(image, factor, fill=IMAGENET_FILL):
  return affine(image, [1., 0., 0., factor, 1., 0.], fill)


def translate_x(image, pixels, fill=IMAGENET_FILL):
  return affine(image, [1., 0., pixels, 0., 1., 0.], fill)


def translate_y(image, pixels, fill=IMAGENET_FILL):
  return affine(image, [1., 0., 0., 0., 1., pixels], fill)


def _ops(increasing: bool, fill: Sequence[int]) -> List[Tuple[str, _Op]]:
  """timm's `_RAND_INCREASING_TRANSFORMS` or `_RAND_TRANSFORMS` with their level functions.

  Each op takes (image, magnitude in [0, 10], sign in {-1, 1}).
  """

  def level(m, scale):
    return m / _MAX_LEVEL * scale

  def enhance(fn):
    if increasing:
      return lambda img, m, s: fn(img, tf.maximum(0.1, 1.0 + s * level(m, 0.9)))
    return lambda img, m, s: fn(img, level(m, 1.8) + 0.1)

  def as_int(x):
    return tf.cast(tf.floor(x), tf.int32)

  if increasing:
    posterize_bits = lambda m: 4 - as_int(level(m, 4))
    solarize_threshold = lambda m: 256 - as_int(level(m, 256))
  else:
    posterize_bits = lambda m: as_int(level(m, 4))
    solarize_threshold = lambda m: as_int(level(m, 256))

  def size(img, axis):
    return tf.cast(tf.shape(img)[axis], tf.float32)

  return [
      ('AutoContrast', lambda img, m, s: auto_contrast(img)),
      ('Equalize', lambda img, m, s: equalize(img)),
      ('Invert', lambda img, m, s: invert(img)),
      ('Rotate', lambda img, m, s: rotate(img, s * level(m, 30.0), fill)),
      ('Posterize', lambda img, m, s: posterize(img, posterize_bits(m))),
      ('Solarize', lambda img, m, s: solarize(img, solarize_threshold(m))),
      ('SolarizeAdd', lambda img, m, s: solarize_add(img, as_int(level(m, 110)))),
      ('Color', enhance(color)),
      ('Contrast', enhance(contrast)),
      ('Brightness', enhance(brightness)),
      ('Sharpness', enhance(sharpness)),
      ('ShearX', lambda img, m, s: shear_x(img, s * level(m, 0.3), fill)),
      ('ShearY', lambda img, m, s: shear_y(img, s * level(m, 0.3), fill)),
      ('TranslateXRel',
       lambda img, m, s: translate_x(img, s * level(m, 0.45) * size(img, 1), fill)),
      ('TranslateYRel',
       lambda img, m, s: translate_y(img, s * level(m, 0.45) * size(img, 0), fill)),
  ]


def op_names(increasing: bool = True) -> List[str]:
  return [name for name, _ in _ops(increasing, IMAGENET_FILL)]


def _random_op(image: tf.Tensor, seed: tf.Tensor, ops: Sequence[_Op], magnitude: float,
               magnitude_std: float, op_prob: float) -> tf.Tensor:
  """With probability `op_prob`, one uniformly drawn op at a noisy magnitude and random sign."""
  choice_seed, apply_seed, magnitude_seed, sign_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 4))
  index = tf.random.stateless_uniform([], choice_seed, 0, len(ops), dtype=tf.int32)
  mag = magnitude + magnitude_std * tf.random.stateless_normal([], magnitude_seed)
  mag = tf.clip_by_value(mag, 0.0, _MAX_LEVEL)
  sign = tf.where(tf.random.stateless_uniform([], sign_seed) < 0.5, -1.0, 1.0)
  branches = [functools.partial(op, image, mag, sign) for op in ops]
  return tf.cond(tf.random.stateless_uniform([], apply_seed) < op_prob,
                 lambda: tf.switch_case(index, branches), lambda: image)


def randaugment(image: tf.Tensor, seed: tf.Tensor, *, num_ops: int = 2,
                magnitude: float = 9.0, magnitude_std: float = 0.5, increasing: bool = True,
                op_prob: float = 0.5, fill: Sequence[int] = IMAGENET_FILL) -> tf.Tensor:
  """Applies `num_ops` random ops to a uint8 [H, W, 3] image; stateless in `seed` ([2])."""
  ops = [op for _, op in _ops(increasing, fill)]
  for op_seed in tf.unstack(tf.random.experimental.stateless_split(seed, num_ops)):
    image = _random_op(image, op_seed, ops, magnitude, magnitude_std, op_prob)
  return image
