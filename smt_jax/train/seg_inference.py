"""Segmentation inference as mmseg's EncoderDecoder does it: whole-image and sliding-window.

`logits_fn(images) -> logits` is the network on normalized NHWC images, at whatever output
stride (UPerNet's main logits are at stride 4: `lambda x: model.apply(variables, x)[0]`).
Both functions return float logits [B, out_h, out_w, C] at `out_size`, the original image
size that mmseg scores at; take the argmax for the prediction. Every resize is bilinear
with align_corners=False and no antialiasing (`smt_jax.models.upernet.resize`), mmseg's.

whole: logits resized to the input size (mmseg `encode_decode`), then to out_size.
slide: windows of `crop` every `stride` (mmseg `slide_inference`, the ADE20K configs use
  512 and 341), the last row and column of windows moved back to end at the image edge
  and an image smaller than the crop taken whole as one smaller window; each window's
  logits are resized to the window, summed into place and divided by how many windows
  cover each pixel, then resized to out_size.
Both are jit-able for a fixed input size (the windows are static slices).
"""
from typing import Callable, List, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from smt_jax.models.upernet import resize

LogitsFn = Callable[[jax.Array], jax.Array]


def window_boxes(height: int, width: int, crop: Sequence[int] = (512, 512),
                 stride: Sequence[int] = (341, 341)) -> List[Tuple[int, int, int, int]]:
  """mmseg slide_inference's windows (y1, y2, x1, x2), row by row."""
  def starts(size, crop_size, step):
    grids = max(size - crop_size + step - 1, 0) // step + 1
    spans = []
    for i in range(grids):
      end = min(i * step + crop_size, size)
      spans.append((max(end - crop_size, 0), end))
    return spans
  return [(y1, y2, x1, x2) for y1, y2 in starts(height, crop[0], stride[0])
          for x1, x2 in starts(width, crop[1], stride[1])]


def count_map(height: int, width: int, crop: Sequence[int] = (512, 512),
              stride: Sequence[int] = (341, 341)) -> np.ndarray:
  """int [height, width]: how many windows cover each pixel (never 0)."""
  counts = np.zeros((height, width), np.int32)
  for y1, y2, x1, x2 in window_boxes(height, width, crop, stride):
    counts[y1:y2, x1:x2] += 1
  return counts


def _to_size(logits: jax.Array, size: Sequence[int]) -> jax.Array:
  return logits if tuple(logits.shape[1:3]) == tuple(size) else resize(logits, tuple(size))


def whole_inference(logits_fn: LogitsFn, images: jax.Array, out_size: Sequence[int]
                    ) -> jax.Array:
  """The network on the whole (resized) images; logits [B, *out_size, C]."""
  logits = _to_size(logits_fn(images).astype(jnp.float32), images.shape[1:3])
  return _to_size(logits, out_size)


def slide_inference(logits_fn: LogitsFn, images: jax.Array, out_size: Sequence[int],
                    crop: Sequence[int] = (512, 512), stride: Sequence[int] = (341, 341)
                    ) -> jax.Array:
  """The network on overlapping windows, logits averaged; [B, *out_size, C]."""
  height, width = images.shape[1:3]
  total = None
  for y1, y2, x1, x2 in window_boxes(height, width, crop, stride):
    logits = _to_size(logits_fn(images[:, y1:y2, x1:x2]).astype(jnp.float32), (y2 - y1, x2 - x1))
    placed = jnp.pad(logits, ((0, 0), (y1, height - y2), (x1, width - x2), (0, 0)))
    total = placed if total is None else total + placed
  counts = jnp.asarray(count_map(height, width, crop, stride), jnp.float32)
  return _to_size(total / counts[None, :, :, None], out_size)
