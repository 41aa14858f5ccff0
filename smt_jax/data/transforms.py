"""Per-image decode, crop, resize and flip in PIL, with the reference's semantics.

Training follows timm 0.4.12's `RandomResizedCropAndInterpolation` (bicubic) and
`RandomHorizontalFlip`, then RandAugment (`randaugment.py`); evaluation follows the official
SMT code: torchvision `Resize(int(image_size / crop_pct))` on the shorter side and
`CenterCrop(image_size)`, or a square `Resize` for the 384 fine-tune. Images are read as
timm's loader reads them, `Image.open(...).convert('RGB')`, so greyscale, CMYK, palette,
RGBA, GIF (first frame) and BMP all become RGB the same way.

Decoding does as little work as it can: when a JPEG window shrinks by 2x or more on its way
to the output size, the JPEG is decoded at 1/2, 1/4 or 1/8 scale in the DCT domain (PIL's
`draft`), never below the output size, and the window is resized from that smaller image.
This is the one place where the output differs from timm's full decode and resize. Measured
on photo-like JPEGs (smooth colour fields plus noise; 1000x750 to 2000x1500, quality 75 to
95; 143 random windows at 2x to 15x shrink, outputs 96 to 224 px): 0.85 levels mean
absolute difference overall; per window at most 2.0 mean and 14 at any pixel, the largest
when the reduced window is just above the output size. On hard-edged flat blocks the
evaluation resize differs by 1.3 to 1.6 mean, up to 26 at edge pixels.
tests/data/test_transforms.py bounds the photo-like case. Without a reduced decode the
output equals timm's bit for bit (the same PIL calls).

All randomness comes from the `numpy.random.Generator` passed in, so the pipeline can seed
it per (seed, epoch, example).
"""
import io
import math
from typing import Sequence, Tuple

import ml_collections
import numpy as np
from PIL import Image, ImageFile

from smt_jax.data import randaugment as randaugment_lib

# Strict: a truncated file raises instead of decoding to grey padding (PIL's default, which
# other code may have relaxed).
ImageFile.LOAD_TRUNCATED_IMAGES = False

_CROP_ATTEMPTS = 10
_DRAFT_FACTORS = (8, 4, 2)

Box = Tuple[float, float, float, float]  # (left, top, right, bottom), as PIL's crop box.


class DecodeError(Exception):
  """Image bytes that cannot be read or decoded (truncated, corrupt or unsupported)."""


def random_crop_window(rng: np.random.Generator, height: int, width: int,
                       scale: Sequence[float], ratio: Sequence[float]) -> Tuple[int, int, int, int]:
  """(top, left, crop_height, crop_width) of a random resized crop, as timm draws it.

  Up to ten draws of an area fraction, uniform in `scale`, and an aspect ratio, log-uniform
  in `ratio`; the first window that fits wins, at a uniformly drawn offset. If none fits:
  the largest central window whose aspect ratio is within `ratio`.
  """
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(_CROP_ATTEMPTS):
    target_area = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target_area * aspect)))
    h = int(round(math.sqrt(target_area / aspect)))
    if w <= width and h <= height:
      return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
  in_ratio = width / height
  w, h = width, height
  if in_ratio < min(ratio):
    h = int(round(w / min(ratio)))
  elif in_ratio > max(ratio):
    w = int(round(h * max(ratio)))
  return (height - h) // 2, (width - w) // 2, h, w


def resize_shorter_side(height: int, width: int, size: int) -> Tuple[int, int]:
  """torchvision `Resize(size)`: the shorter side becomes `size`, the longer one truncates."""
  if width <= height:
    return int(size * height / width), size
  return size, int(size * width / height)


def _open(data: bytes) -> Image.Image:
  """Reads the header only; pixels are decoded by `_decode`."""
  try:
    return Image.open(io.BytesIO(data))
  except Exception as e:  # PIL raises several types for unreadable headers.
    raise DecodeError(f'cannot read image header: {e}') from e


def _decode(image: Image.Image, box: Box, size: Tuple[int, int]) -> Tuple[Image.Image, Box]:
  """Decodes `image` as RGB, for a later resize of `box` to `size` (width, height).

  A JPEG is decoded at the most reduced DCT scale (1/2, 1/4, 1/8) at which `box` still covers
  `size`; the returned box is `box` in the decoded image's coordinates.
  """
  shrink = min((box[2] - box[0]) / size[0], (box[3] - box[1]) / size[1])
  factor = next((f for f in _DRAFT_FACTORS if shrink >= f), 1)
  try:
    if factor > 1 and image.format == 'JPEG':
      width, height = image.size
      drafted = image.draft('RGB', (width // factor, height // factor))
      if drafted is not None:
        scale = round(width / drafted[1][2])  # The DCT scale, 2, 4 or 8.
        box = tuple(v / scale for v in box)
    image.load()
    if image.mode != 'RGB':
      image = image.convert('RGB')
  except Exception as e:  # Truncated or corrupt data: OSError, SyntaxError, ValueError...
    raise DecodeError(f'cannot decode {image.format} image: {e}') from e
  return image, box


def decode(data: bytes) -> np.ndarray:
  """Encoded image -> uint8 [H, W, 3] RGB at full size, as timm's loader reads it."""
  image = _open(data)
  width, height = image.size
  return np.array(_decode(image, (0, 0, width, height), (width, height))[0])


def _resized(image: Image.Image, box: Box, size: Tuple[int, int]) -> Image.Image:
  """Bicubic resize of `box` to `size`: crop then resize (torchvision's `resized_crop`).

  A fractional box (only after a reduced decode) is resampled in place instead of cropped.
  """
  if any(v != int(v) for v in box):
    return image.resize(size, Image.Resampling.BICUBIC, box=box)
  box = tuple(int(v) for v in box)
  if box != (0, 0) + image.size:
    image = image.crop(box)
  return image.resize(size, Image.Resampling.BICUBIC)


def _random_resized_crop(image: Image.Image, rng: np.random.Generator, image_size: int,
                         aug: ml_collections.ConfigDict) -> Image.Image:
  width, height = image.size
  top, left, h, w = random_crop_window(rng, height, width, aug.crop_scale, aug.crop_ratio)
  size = (image_size, image_size)
  image, box = _decode(image, (left, top, left + w, top + h), size)
  return _resized(image, box, size)


def _eval_geometry(image: Image.Image, image_size: int,
                   aug: ml_collections.ConfigDict) -> Image.Image:
  width, height = image.size
  if not aug.eval_center_crop:
    size = (image_size, image_size)
    image, box = _decode(image, (0, 0, width, height), size)
    return _resized(image, box, size)
  new_h, new_w = resize_shorter_side(height, width, int(image_size / aug.eval_crop_pct))
  image, box = _decode(image, (0, 0, width, height), (new_w, new_h))
  image = _resized(image, box, (new_w, new_h))
  # torchvision `CenterCrop`: offsets round half to even, as Python's round.
  top = int(round((new_h - image_size) / 2.0))
  left = int(round((new_w - image_size) / 2.0))
  return image.crop((left, top, left + image_size, top + image_size))


def train_image(data: bytes, rng: np.random.Generator, image_size: int,
                aug: ml_collections.ConfigDict) -> np.ndarray:
  """Encoded image -> augmented uint8 [image_size, image_size, 3] RGB (see `config.aug`)."""
  image = _open(data)
  if aug.random_resized_crop:
    image = _random_resized_crop(image, rng, image_size, aug)
  else:
    image = _eval_geometry(image, image_size, aug)
  if aug.hflip and rng.random() < 0.5:
    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
  if aug.randaugment_num_ops:
    image = randaugment_lib.randaugment(
        image, rng, num_ops=aug.randaugment_num_ops, magnitude=aug.randaugment_magnitude,
        magnitude_std=aug.randaugment_magnitude_std, increasing=aug.randaugment_increasing,
        op_prob=aug.randaugment_op_prob)
  return np.array(image)


def eval_image(data: bytes, image_size: int, aug: ml_collections.ConfigDict) -> np.ndarray:
  """Encoded image -> uint8 [image_size, image_size, 3] RGB with the evaluation geometry."""
  return np.array(_eval_geometry(_open(data), image_size, aug))

