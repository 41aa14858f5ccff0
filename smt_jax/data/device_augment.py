"""Batch augmentation on the accelerators, run inside the jitted train step.

The host sends uint8 images (a quarter of the bytes of float32); here they are normalized,
randomly erased and mixed. These are a few elementwise passes over the batch, small next to
the model's forward and backward pass, whereas on the host the per-pixel noise of random
erasing and the float conversion would add CPU work to every image, and the host is what
limits input throughput (see `pipeline`).

Semantics are timm's `RandomErasing(mode='pixel', max_count=1)` and `Mixup(mode='batch',
correct_lam=True)` with label smoothing, as the official SMT code uses them. One deliberate
difference: timm mixes example i with example B-1-i of its process's batch; here example 2k
is mixed with 2k+1. The batch order is random, so the distribution is the same, and on a
batch split over devices the partner lives on the same device (no cross-device traffic) as
long as every device holds an even number of rows. tests/data/test_mixup_timm.py shows
that the draws follow timm's distributions and that, paired as timm pairs, the mixed
images and targets are timm's.

Usage in the train step: `prepare = make_prepare(config.aug, num_classes)`, then
`images, targets = prepare(rng, batch)` with a fresh key per step; evaluation uses
`prepare_eval(batch)`.
"""
import math
from typing import Callable, Dict, NamedTuple, Tuple

import jax
import jax.numpy as jnp
import ml_collections

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_ERASE_ATTEMPTS = 10


def normalize(images: jax.Array, dtype=jnp.float32) -> jax.Array:
  """uint8 [..., 3] -> (x / 255 - mean) / std with the ImageNet mean and std."""
  mean = jnp.asarray(IMAGENET_MEAN, jnp.float32) * 255
  std = jnp.asarray(IMAGENET_STD, jnp.float32) * 255
  return ((images.astype(jnp.float32) - mean) / std).astype(dtype)


def _boxes_to_mask(top, left, height, width, image_h: int, image_w: int) -> jax.Array:
  """[B, H, W] bool masks of the boxes rows [top, top+height), columns [left, left+width)."""
  rows = jnp.arange(image_h)[None, :]
  cols = jnp.arange(image_w)[None, :]
  in_rows = (rows >= top[:, None]) & (rows < (top + height)[:, None])
  in_cols = (cols >= left[:, None]) & (cols < (left + width)[:, None])
  return in_rows[:, :, None] & in_cols[:, None, :]


def random_erasing(rng: jax.Array, images: jax.Array, prob: float = 0.25,
                   min_area: float = 0.02, max_area: float = 1 / 3,
                   min_aspect: float = 0.3) -> jax.Array:
  """With probability `prob` per image, one box is replaced by standard normal noise.

  `images` are normalized [B, H, W, C]. The box has area U(min_area, max_area) of the image
  and log-uniform aspect in [min_aspect, 1 / min_aspect]; of ten draws the first that fits
  strictly inside the image is used, and if none fits the image is left alone (timm).
  """
  batch, height, width, _ = images.shape
  keys = jax.random.split(rng, 6)
  shape = (batch, _ERASE_ATTEMPTS)
  area = jax.random.uniform(keys[0], shape, minval=min_area, maxval=max_area) * height * width
  aspect = jnp.exp(jax.random.uniform(keys[1], shape, minval=math.log(min_aspect),
                                      maxval=-math.log(min_aspect)))
  box_h = jnp.round(jnp.sqrt(area * aspect))
  box_w = jnp.round(jnp.sqrt(area / aspect))
  fits = (box_w < width) & (box_h < height)
  first = jnp.argmax(fits, axis=1)[:, None]
  box_h = jnp.take_along_axis(box_h, first, axis=1)[:, 0]
  box_w = jnp.take_along_axis(box_w, first, axis=1)[:, 0]
  # randint(0, size - box) inclusive.
  top = jnp.floor(jax.random.uniform(keys[2], (batch,)) * (height - box_h + 1))
  left = jnp.floor(jax.random.uniform(keys[3], (batch,)) * (width - box_w + 1))
  erase = (jax.random.uniform(keys[4], (batch,)) < prob) & fits.any(axis=1)
  mask = _boxes_to_mask(top, left, box_h, box_w, height, width) & erase[:, None, None]
  noise = jax.random.normal(keys[5], images.shape, jnp.float32).astype(images.dtype)
  return jnp.where(mask[..., None], noise, images)


def smooth_one_hot(labels: jax.Array, num_classes: int, smoothing: float) -> jax.Array:
  """One-hot targets with `smoothing` spread over all classes (timm's `mixup_target`)."""
  off = smoothing / num_classes
  return jax.nn.one_hot(labels, num_classes) * (1.0 - smoothing) + off


def partner(x: jax.Array) -> jax.Array:
  """Swaps rows 2k and 2k+1: each example's mixing partner."""
  paired = x.reshape((x.shape[0] // 2, 2) + x.shape[1:])
  return paired[:, ::-1].reshape(x.shape)


class MixParams(NamedTuple):
  """One batch's Mixup/CutMix draw.

  `lam` is the weight of each example's own target: Beta-drawn for Mixup, the exact
  unpasted fraction for CutMix, 1 when the batch is not mixed. `box` is the CutMix box
  (top, bottom, left, right): rows [top, bottom) and columns [left, right).
  """
  use_cutmix: jax.Array
  lam: jax.Array
  box: Tuple[jax.Array, jax.Array, jax.Array, jax.Array]


def draw_mix(rng: jax.Array, height: int, width: int, *, mixup_alpha: float,
             cutmix_alpha: float, prob: float, switch_prob: float) -> MixParams:
  """timm's `Mixup._params_per_batch` and `cutmix_bbox_and_lam` (correct_lam=True).

  With probability `prob` the batch is mixed: by CutMix with probability `switch_prob`
  when both alphas are positive (else by whichever is), lambda ~ Beta(alpha, alpha).
  CutMix's box is (H, W) * sqrt(1 - lambda), each side truncated and halved, centred on a
  uniformly drawn pixel and clipped to the image; lambda becomes the unpasted fraction.
  """
  keys = jax.random.split(rng, 6)
  mix = jax.random.uniform(keys[0]) < prob
  if mixup_alpha > 0 and cutmix_alpha > 0:
    use_cutmix = jax.random.uniform(keys[1]) < switch_prob
  else:
    use_cutmix = jnp.asarray(cutmix_alpha > 0)
  lam_mixup = jax.random.beta(keys[2], mixup_alpha, mixup_alpha) if mixup_alpha > 0 else 1.0
  lam_cutmix = jax.random.beta(keys[3], cutmix_alpha, cutmix_alpha) if cutmix_alpha > 0 else 1.0

  ratio = jnp.sqrt(1.0 - lam_cutmix)
  half_h = jnp.floor(height * ratio).astype(jnp.int32) // 2
  half_w = jnp.floor(width * ratio).astype(jnp.int32) // 2
  cy = jax.random.randint(keys[4], (), 0, height)
  cx = jax.random.randint(keys[5], (), 0, width)
  y0, y1 = jnp.clip(cy - half_h, 0, height), jnp.clip(cy + half_h, 0, height)
  x0, x1 = jnp.clip(cx - half_w, 0, width), jnp.clip(cx + half_w, 0, width)
  lam_box = 1.0 - ((y1 - y0) * (x1 - x0)) / (height * width)
  use_cutmix = mix & use_cutmix
  lam = jnp.where(mix, jnp.where(use_cutmix, lam_box, lam_mixup), 1.0)
  return MixParams(use_cutmix, jnp.asarray(lam, jnp.float32), (y0, y1, x0, x1))


def apply_mix(images: jax.Array, targets: jax.Array, params: MixParams
              ) -> Tuple[jax.Array, jax.Array]:
  """timm's `Mixup._mix_batch` and `mixup_target` with example 2k and 2k+1 as partners.

  CutMix pastes the partner's box, Mixup blends lam * own + (1 - lam) * partner's image
  (the identity when lam is 1); targets are lam * own + (1 - lam) * partner's targets.
  """
  height, width = images.shape[1:3]
  y0, y1, x0, x1 = params.box
  box = _boxes_to_mask(y0[None], x0[None], (y1 - y0)[None], (x1 - x0)[None], height, width)
  other = partner(images)
  cut = jnp.where(box[0][None, :, :, None], other, images)
  lam = params.lam
  blended = (lam * images + (1.0 - lam) * other).astype(images.dtype)
  return (jnp.where(params.use_cutmix, cut, blended),
          lam * targets + (1.0 - lam) * partner(targets))


def mixup_cutmix(rng: jax.Array, images: jax.Array, labels: jax.Array, num_classes: int, *,
                 mixup_alpha: float = 0.2, cutmix_alpha: float = 1.0, prob: float = 1.0,
                 switch_prob: float = 0.5,
                 label_smoothing: float = 0.1) -> Tuple[jax.Array, jax.Array]:
  """Mixup or CutMix of the batch with one lambda, and soft targets [B, num_classes].

  `draw_mix` draws the batch's parameters and `apply_mix` mixes; targets are
  lambda * own + (1 - lambda) * partner's smoothed one-hot. The batch size must be even.
  """
  targets = smooth_one_hot(labels, num_classes, label_smoothing)
  if (mixup_alpha <= 0 and cutmix_alpha <= 0) or prob <= 0:
    return images, targets
  if images.shape[0] % 2:
    raise ValueError(f'Mixup/CutMix pairs examples; the batch size {images.shape[0]} is odd.')
  params = draw_mix(rng, images.shape[1], images.shape[2], mixup_alpha=mixup_alpha,
                    cutmix_alpha=cutmix_alpha, prob=prob, switch_prob=switch_prob)
  return apply_mix(images, targets, params)


def make_prepare(aug: ml_collections.ConfigDict, num_classes: int, dtype=jnp.float32
                 ) -> Callable[[jax.Array, Dict[str, jax.Array]], Tuple[jax.Array, jax.Array]]:
  """prepare(rng, batch) -> (images [B, H, W, 3] `dtype`, soft targets [B, num_classes] f32).

  `batch` is a training batch {'image' uint8, 'label' int32}; call it inside jit.
  """

  def prepare(rng, batch):
    erase_rng, mix_rng = jax.random.split(rng)
    images = normalize(batch['image'], dtype)
    if aug.reprob > 0:
      images = random_erasing(erase_rng, images, aug.reprob)
    return mixup_cutmix(
        mix_rng, images, batch['label'], num_classes, mixup_alpha=aug.mixup_alpha,
        cutmix_alpha=aug.cutmix_alpha, prob=aug.mixup_prob,
        switch_prob=aug.mixup_switch_prob, label_smoothing=aug.label_smoothing)

  return prepare


def prepare_eval(batch: Dict[str, jax.Array], dtype=jnp.float32) -> jax.Array:
  """Normalized evaluation images."""
  return normalize(batch['image'], dtype)
