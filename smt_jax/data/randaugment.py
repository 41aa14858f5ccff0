"""RandAugment in PIL, with the semantics of timm 0.4.12's `rand_augment_transform`.

The official recipe `rand-m9-mstd0.5-inc1` means: two ops per image, each drawn uniformly
(with replacement) from the 'increasing' op set and applied with probability 0.5, at a
magnitude drawn per op from N(9, 0.5) and clipped to [0, 10]; signed ops (rotate, shear,
translate, the increasing enhancements) flip sign with probability 0.5. The hyperparameters
are those timm's `create_transform` passes with `interpolation='bicubic'`: geometric ops
resample bicubically, areas moved in from outside the image take the ImageNet mean colour,
and translations are relative, up to 45% of the image side. Each op makes the same PIL
calls with the same arguments as timm's, so outputs are equal bit for bit
(tests/data/test_randaugment.py).
"""
from typing import Callable, Dict, Tuple, Union

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

# timm's `img_mean` fill: round(255 * ImageNet mean).
IMAGENET_FILL = (124, 116, 104)
MAX_LEVEL = 10.0

# An op maps (image, magnitude in [0, MAX_LEVEL], sign in {-1, 1}) to an image; unsigned
# ops ignore the sign.
Op = Callable[[Image.Image, float, float], Image.Image]


def _level(magnitude: float, top: float) -> float:
  """Linear map of [0, MAX_LEVEL] onto [0, top]."""
  return magnitude / MAX_LEVEL * top


def _affine(image: Image.Image, matrix) -> Image.Image:
  """Output pixel (x, y) samples the input at (a x + b y + c, d x + e y + f)."""
  return image.transform(image.size, Image.Transform.AFFINE, matrix,
                         resample=Image.Resampling.BICUBIC, fillcolor=IMAGENET_FILL)


def rotate(image, magnitude, sign):
  """Up to 30 degrees, counter-clockwise for a positive sign, about the centre."""
  return image.rotate(sign * _level(magnitude, 30.0), resample=Image.Resampling.BICUBIC,
                      fillcolor=IMAGENET_FILL)


def shear_x(image, magnitude, sign):
  return _affine(image, (1, sign * _level(magnitude, 0.3), 0, 0, 1, 0))


def shear_y(image, magnitude, sign):
  return _affine(image, (1, 0, 0, sign * _level(magnitude, 0.3), 1, 0))


def translate_x(image, magnitude, sign):
  """Shifts by up to 45% of the width."""
  return _affine(image, (1, 0, sign * _level(magnitude, 0.45) * image.size[0], 0, 1, 0))


def translate_y(image, magnitude, sign):
  """Shifts by up to 45% of the height."""
  return _affine(image, (1, 0, 0, 0, 1, sign * _level(magnitude, 0.45) * image.size[1]))


def _posterize(image, bits):
  """Keeps the `bits` (0 to 8) most significant bits of every value.

  PIL's `ImageOps.posterize` did the same before Pillow 13, which refuses 0 bits; timm's
  'inc1' set asks for 0 bits at magnitude 10, hence the own lookup table (0 bits: black).
  """
  if bits >= 8:
    return image
  mask = ~(2 ** (8 - bits) - 1)
  return image.point([v & mask for v in range(256)] * len(image.getbands()))


def posterize(image, magnitude, sign):
  return _posterize(image, int(_level(magnitude, 4)))


def posterize_increasing(image, magnitude, sign):
  return _posterize(image, 4 - int(_level(magnitude, 4)))


def solarize(image, magnitude, sign):
  """Inverts every value at or above a threshold that rises with the magnitude."""
  return ImageOps.solarize(image, int(_level(magnitude, 256)))


def solarize_increasing(image, magnitude, sign):
  return ImageOps.solarize(image, 256 - int(_level(magnitude, 256)))


def solarize_add(image, magnitude, sign):
  """Adds up to 110 (saturating at 255) to every value below 128."""
  add = int(_level(magnitude, 110))
  lut = [min(255, v + add) if v < 128 else v for v in range(256)]
  return image.point(lut * len(image.getbands()))


def _enhance(enhancer, increasing: bool) -> Op:
  """An ImageEnhance op. Plain: factor 0.1 to 1.9 with the magnitude, unsigned.

  Increasing: factor 1 -/+ 0.9 * magnitude / MAX_LEVEL, moving away from the identity (1).
  """
  if increasing:
    return lambda image, magnitude, sign: enhancer(image).enhance(
        1.0 + sign * _level(magnitude, 0.9))
  return lambda image, magnitude, sign: enhancer(image).enhance(_level(magnitude, 1.8) + 0.1)


OPS: Dict[str, Op] = {
    'AutoContrast': lambda image, magnitude, sign: ImageOps.autocontrast(image),
    'Equalize': lambda image, magnitude, sign: ImageOps.equalize(image),
    'Invert': lambda image, magnitude, sign: ImageOps.invert(image),
    'Rotate': rotate,
    'Posterize': posterize,
    'PosterizeIncreasing': posterize_increasing,
    'Solarize': solarize,
    'SolarizeIncreasing': solarize_increasing,
    'SolarizeAdd': solarize_add,
    'Color': _enhance(ImageEnhance.Color, increasing=False),
    'ColorIncreasing': _enhance(ImageEnhance.Color, increasing=True),
    'Contrast': _enhance(ImageEnhance.Contrast, increasing=False),
    'ContrastIncreasing': _enhance(ImageEnhance.Contrast, increasing=True),
    'Brightness': _enhance(ImageEnhance.Brightness, increasing=False),
    'BrightnessIncreasing': _enhance(ImageEnhance.Brightness, increasing=True),
    'Sharpness': _enhance(ImageEnhance.Sharpness, increasing=False),
    'SharpnessIncreasing': _enhance(ImageEnhance.Sharpness, increasing=True),
    'ShearX': shear_x,
    'ShearY': shear_y,
    'TranslateXRel': translate_x,
    'TranslateYRel': translate_y,
}

# timm's `_RAND_TRANSFORMS` and `_RAND_INCREASING_TRANSFORMS`, in timm's order.
OP_NAMES = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'Posterize', 'Solarize',
            'SolarizeAdd', 'Color', 'Contrast', 'Brightness', 'Sharpness', 'ShearX', 'ShearY',
            'TranslateXRel', 'TranslateYRel')
INCREASING_OP_NAMES = ('AutoContrast', 'Equalize', 'Invert', 'Rotate', 'PosterizeIncreasing',
                       'SolarizeIncreasing', 'SolarizeAdd', 'ColorIncreasing',
                       'ContrastIncreasing', 'BrightnessIncreasing', 'SharpnessIncreasing',
                       'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel')


def op_names(increasing: bool) -> Tuple[str, ...]:
  return INCREASING_OP_NAMES if increasing else OP_NAMES


def randaugment(image: Union[np.ndarray, Image.Image], rng: np.random.Generator, *,
                num_ops: int, magnitude: float, magnitude_std: float, increasing: bool,
                op_prob: float) -> Union[np.ndarray, Image.Image]:
  """Applies `num_ops` random ops to an RGB image: uint8 [H, W, 3] array or PIL image.

  Returns the same kind as it was given. All randomness comes from `rng`.
  """
  pil = Image.fromarray(image) if isinstance(image, np.ndarray) else image
  names = op_names(increasing)
  for index in rng.integers(0, len(names), size=num_ops):
    if rng.random() >= op_prob:
      continue
    level = rng.normal(magnitude, magnitude_std) if magnitude_std > 0 else magnitude
    level = min(MAX_LEVEL, max(0.0, level))
    sign = -1.0 if rng.random() < 0.5 else 1.0
    pil = OPS[names[index]](pil, level, sign)
  return np.array(pil) if isinstance(image, np.ndarray) else pil
