"""The ADE20K training and evaluation transforms of the official SMT segmentation configs,
per example in numpy (host side, any loader).

mmseg 0.x `configs/_base_/datasets/ade20k.py`, which the official configs inherit:
  train: Resize(img_scale=(2048, 512), ratio_range=(0.5, 2.0)), RandomCrop(512x512,
         cat_max_ratio=0.75), RandomFlip(0.5), PhotoMetricDistortion, Normalize,
         Pad(512x512, pad_val=0, seg_pad_val=255)
  test:  Resize((2048, 512), keep_ratio=True), Normalize; scored at the original size.
Images are uint8 RGB [H, W, 3], labels uint8 [H, W] with 255 ignored (labels as the ade20k
builder stores them, zero label already reduced). Normalization is left to the device
(`smt_jax.data.device_augment.normalize`, the same mean and std as mmseg), so everything
here stays uint8. mmseg pads *after* normalizing, i.e. with the mean colour; here the pad is
the mean rounded to uint8, `PAD_RGB`, which normalizes to within 0.01 of mmseg's 0.

mmcv does its resizing and colour conversion with OpenCV; this module does it in numpy,
after OpenCV's arithmetic (the vector code paths it takes on x86): nearest resizing, RGB->HSV
and HSV->RGB equal OpenCV exactly; bilinear resizing (OpenCV's fixed-point weights) equals
it on more than 99% of pixels and is within 1 grey level elsewhere (OpenCV's scalar code for
the last pixels of a row rounds differently). Checked against outputs of OpenCV 4.8 (5.1
gives the same) kept in tests/testdata/seg_augment_opencv (tests/data/test_seg_augment.py).
"""
from typing import Tuple

import ml_collections
import numpy as np

IGNORE_INDEX = 255
PAD_RGB = (124, 116, 104)  # ImageNet mean x 255, rounded: normalizes to ~0 as mmseg's pad
_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS
_HSV_SHIFT = 12  # OpenCV's hsv_shift


def default_seg_aug_config() -> ml_collections.ConfigDict:
  """The official ADE20K pipeline's settings (mmseg 0.x ade20k.py)."""
  cfg = ml_collections.ConfigDict()
  cfg.img_scale = (2048, 512)  # (long, short) bound for keep-ratio resizing
  cfg.ratio_range = (0.5, 2.0)  # training: img_scale times a uniform ratio
  cfg.crop_size = (512, 512)  # (h, w)
  cfg.cat_max_ratio = 0.75  # re-draw a crop where one class covers this share or more
  cfg.flip_prob = 0.5
  cfg.brightness_delta = 32
  cfg.contrast_range = (0.5, 1.5)
  cfg.saturation_range = (0.5, 1.5)
  cfg.hue_delta = 18
  return cfg


def rescale_size(height: int, width: int, scale: Tuple[int, int]) -> Tuple[int, int]:
  """mmcv `rescale_size` with a (long, short) tuple: the largest size of the same aspect
  ratio with its long side <= max(scale) and short side <= min(scale); returns (h, w)."""
  factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
  return int(height * factor + 0.5), int(width * factor + 0.5)


def resize_nearest(label: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
  """OpenCV INTER_NEAREST to size (h, w): source index floor(dst * src / dst_size)."""
  def index(src, dst):
    return np.minimum(np.floor(np.arange(dst) * (1.0 / (dst / src))).astype(np.int64), src - 1)
  return label[index(label.shape[0], size[0])[:, None], index(label.shape[1], size[1])]


def _linear_taps(src: int, dst: int):
  """OpenCV INTER_LINEAR taps (half-pixel centres, edges clamped), weights x 2048."""
  f = ((np.arange(dst) + 0.5) * (1.0 / (dst / src)) - 0.5).astype(np.float32)
  i = np.floor(f).astype(np.int64)
  f = f - i.astype(np.float32)
  edge = (i < 0) | (i >= src - 1)
  f[edge] = 0
  i = np.clip(i, 0, src - 1)
  scale = np.float32(1 << _COEF_BITS)
  w0 = np.rint((1 - f) * scale).astype(np.int64)
  w1 = np.rint(f * scale).astype(np.int64)
  return i, np.minimum(i + 1, src - 1), w0, w1


def resize_bilinear(image: np.ndarray, size: Tuple[int, int], box=None) -> np.ndarray:
  """OpenCV INTER_LINEAR on uint8 [H, W, C] to size (h, w), without antialiasing, with its
  fixed-point arithmetic; an exact 2x shrink is OpenCV's 2x2 average, as OpenCV does.

  box: (rows, cols) slices of the resized image to return; only those pixels are computed
  (a training crop of a large resize costs the crop, not the resize).
  """
  h, w = image.shape[:2]
  y0, y1, _ = (box[0] if box else slice(None)).indices(size[0])
  x0, x1, _ = (box[1] if box else slice(None)).indices(size[1])
  if (h, w) == tuple(size):
    return image[y0:y1, x0:x1].copy()
  if (h, w) == (2 * size[0], 2 * size[1]):
    x = image[2 * y0:2 * y1, 2 * x0:2 * x1].astype(np.int32)
    return ((x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2] + 2) >> 2
            ).astype(np.uint8)
  c0, c1, u0, u1 = (t[x0:x1] for t in _linear_taps(w, size[1]))
  r0, r1, v0, v1 = (t[y0:y1] for t in _linear_taps(h, size[0]))
  top = r0.min()
  x = image[top:r1.max() + 1].astype(np.int32)  # the source rows the box reads
  rows = (x[:, c0] * u0[:, None] + x[:, c1] * u1[:, None]) >> 4  # x 2048 / 16
  # OpenCV's vector path: each tap's product keeps its high 16 bits, then /4 rounded.
  out = ((rows[r0 - top] * v0[:, None, None]) >> 16) + ((rows[r1 - top] * v1[:, None, None]) >> 16)
  return np.clip((out + 2) >> 2, 0, 255).astype(np.uint8)


def rgb_to_hsv(image: np.ndarray) -> np.ndarray:
  """OpenCV COLOR_RGB2HSV on uint8 (H in [0, 180), S and V in [0, 255]), its integer math."""
  r, g, b = (image[..., k].astype(np.int32) for k in range(3))
  v = np.maximum(np.maximum(r, g), b)
  diff = v - np.minimum(np.minimum(r, g), b)
  round_half = 1 << (_HSV_SHIFT - 1)
  sdiv = np.where(v == 0, 0, np.rint((255 << _HSV_SHIFT) / np.maximum(v, 1))).astype(np.int32)
  hdiv = np.where(diff == 0, 0, np.rint((180 << _HSV_SHIFT) / (6.0 * np.maximum(diff, 1)))
                  ).astype(np.int32)
  s = (diff * sdiv + round_half) >> _HSV_SHIFT
  h = np.where(v == r, g - b, np.where(v == g, b - r + 2 * diff, r - g + 4 * diff))
  h = (h * hdiv + round_half) >> _HSV_SHIFT
  h = np.where(h < 0, h + 180, h)
  return np.stack([h, s, v], -1).astype(np.uint8)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
  """OpenCV COLOR_HSV2RGB on uint8 as its vector path computes it: float32, truncated."""
  h = hsv[..., 0].astype(np.float32) * np.float32(6 / 180)
  s = hsv[..., 1].astype(np.float32) * np.float32(1 / 255)
  v = hsv[..., 2].astype(np.float32) * np.float32(1 / 255)
  sector = np.floor(h)
  h = h - sector
  one = np.float32(1)
  tab = np.stack([v, v * (one - s), v * (one - s * h), v * (one - s * (one - h))], -1)
  order = np.array([[0, 3, 1], [2, 0, 1], [1, 0, 3], [1, 2, 0], [3, 1, 0], [0, 1, 2]])  # r,g,b
  rgb = np.take_along_axis(tab, order[sector.astype(np.int64) % 6], -1)
  return np.clip(rgb * np.float32(255), 0, 255).astype(np.uint8)


def random_scale_size(height: int, width: int, rng: np.random.Generator, cfg
                      ) -> Tuple[int, int]:
  """mmseg Resize with ratio_range: the keep-ratio size for img_scale x U(ratio_range)."""
  low, high = cfg.ratio_range
  ratio = rng.random() * (high - low) + low
  return rescale_size(height, width, (int(cfg.img_scale[0] * ratio),
                                      int(cfg.img_scale[1] * ratio)))


def _draw_box(shape, crop_size, rng):
  top = rng.integers(0, max(shape[0] - crop_size[0], 0) + 1)
  left = rng.integers(0, max(shape[1] - crop_size[1], 0) + 1)
  return (slice(top, min(top + crop_size[0], shape[0])),
          slice(left, min(left + crop_size[1], shape[1])))


def crop_box(label: np.ndarray, rng: np.random.Generator, cfg) -> Tuple[slice, slice]:
  """mmseg RandomCrop's box (rows, cols) on the resized label: crop_size, or smaller where
  the label is; with cat_max_ratio < 1 up to 10 boxes are rejected while one class (255
  not counted) covers >= cat_max_ratio of the box's labelled pixels or only one class is
  present, and then the next box is kept."""
  box = _draw_box(label.shape, cfg.crop_size, rng)
  if cfg.cat_max_ratio < 1:
    for _ in range(10):
      counts = np.bincount(label[box].ravel(), minlength=256)[:IGNORE_INDEX]
      counts = counts[counts > 0]
      if len(counts) > 1 and counts.max() / counts.sum() < cfg.cat_max_ratio:
        break
      box = _draw_box(label.shape, cfg.crop_size, rng)
  return box


def random_flip(image, label, rng: np.random.Generator, cfg):
  """mmseg RandomFlip: both mirrored left-right with probability flip_prob."""
  if rng.random() < cfg.flip_prob:
    return image[:, ::-1], label[:, ::-1]
  return image, label


def _convert(x, alpha=1.0, beta=0.0):
  """mmseg PhotoMetricDistortion.convert: x * alpha + beta in float32, clipped, truncated."""
  return np.clip(x.astype(np.float32) * float(alpha) + float(beta), 0, 255).astype(np.uint8)


def photometric_distortion(image, rng: np.random.Generator, cfg):
  """mmseg PhotoMetricDistortion: brightness, then contrast either before saturation and hue
  or after them (a fair coin, mmseg's `mode`); each of the four steps with probability 1/2."""
  def coin():
    return rng.integers(2) == 1
  if coin():
    image = _convert(image, beta=rng.uniform(-cfg.brightness_delta, cfg.brightness_delta))
  contrast_first = coin()

  def contrast(x):
    return _convert(x, alpha=rng.uniform(*cfg.contrast_range)) if coin() else x
  if contrast_first:
    image = contrast(image)
  if coin():
    hsv = rgb_to_hsv(image)
    hsv[..., 1] = _convert(hsv[..., 1], alpha=rng.uniform(*cfg.saturation_range))
    image = hsv_to_rgb(hsv)
  if coin():
    hsv = rgb_to_hsv(image)
    shift = rng.integers(-cfg.hue_delta, cfg.hue_delta)  # numpy's randint: high excluded
    hsv[..., 0] = (hsv[..., 0].astype(np.int64) + shift) % 180
    image = hsv_to_rgb(hsv)
  if not contrast_first:
    image = contrast(image)
  return image


def pad(image, label, size: Tuple[int, int]):
  """mmseg Pad to size (h, w) at the bottom and right: image PAD_RGB, label 255."""
  h, w = image.shape[:2]
  out_image = np.empty((*size, 3), np.uint8)
  out_image[...] = PAD_RGB
  out_image[:h, :w] = image
  out_label = np.full(size, IGNORE_INDEX, np.uint8)
  out_label[:h, :w] = label
  return out_image, out_label


def train_example(image: np.ndarray, label: np.ndarray, rng: np.random.Generator, cfg
                  ) -> Tuple[np.ndarray, np.ndarray]:
  """The training transforms in mmseg's order: uint8 [crop_h, crop_w, 3] and [crop_h, crop_w]."""
  size = random_scale_size(*image.shape[:2], rng, cfg)  # Resize (bilinear / nearest) and
  label = resize_nearest(label, size)                  # RandomCrop, the image resized
  box = crop_box(label, rng, cfg)                      # only inside the crop
  image, label = resize_bilinear(image, size, box), label[box]
  image, label = random_flip(image, label, rng, cfg)
  image = photometric_distortion(image, rng, cfg)
  return pad(image, label, tuple(cfg.crop_size))


def eval_example(image: np.ndarray, label: np.ndarray, cfg) -> Tuple[np.ndarray, np.ndarray]:
  """The test transform: the image resized (bilinear, kept ratio) to img_scale; the label
  unchanged, since mmseg scores logits resized back to the original size."""
  size = rescale_size(*image.shape[:2], tuple(cfg.img_scale))
  return resize_bilinear(image, size), label
