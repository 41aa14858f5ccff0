"""Semantic segmentation scores as mmseg defines them: aAcc, mIoU, mAcc.

Per batch, on device (jit-able, on global arrays sharded however): `area_counts` gives each
class's intersection, union, predicted area and labelled area (mmseg `intersect_and_union`)
over the pixels whose label is not the ignore index and that `valid` keeps (padded rows of
the last batch, padded pixels of images batched at one size). The host adds the batches'
counts in int64 (`accumulate`) and `summarize` turns the totals into the scores (mmseg
`total_area_to_metrics`):
  aAcc = sum(intersection) / sum(label area)      (pixel accuracy)
  IoU_c = intersection_c / union_c                 mIoU = nanmean over classes
  Acc_c = intersection_c / label area_c            mAcc = nanmean over classes
A class never labelled has Acc NaN; its IoU is NaN if it was never predicted either and 0
if it was (union > 0): NaN classes are left out of the means, as mmseg's nanmean does.
"""
from typing import Any, Dict, Optional

import jax
import jax.numpy as jnp
import numpy as np

IGNORE_INDEX = 255
AREAS = ('intersect', 'union', 'pred', 'label')  # rows of area_counts


def area_counts(pred: jax.Array, label: jax.Array, num_classes: int,
                valid: Optional[jax.Array] = None, ignore_index: int = IGNORE_INDEX
                ) -> jax.Array:
  """int32 [4, num_classes]: rows AREAS, over one batch.

  pred: int [B, H, W] class ids (argmax of the logits); label: int [B, H, W]; valid: bool
  broadcastable to [B, H, W] (e.g. [B, 1, 1] for padded rows), None keeps every pixel.
  A label >= num_classes that is not ignore_index counts in the predicted area only, as
  in mmseg (torch.histc drops it from the label histogram).
  """
  label = label.astype(jnp.int32)
  pred = pred.astype(jnp.int32)
  keep = label != ignore_index
  if valid is not None:
    keep &= jnp.broadcast_to(valid, label.shape)

  def histogram(ids, where):  # class counts; the extra bin num_classes takes what is left out
    return jnp.bincount(jnp.where(where, ids, num_classes).ravel(),
                        length=num_classes + 1)[:num_classes].astype(jnp.int32)
  in_range = keep & (label < num_classes)
  intersect = histogram(label, in_range & (pred == label))
  area_pred = histogram(pred, keep)
  area_label = histogram(label, in_range)
  return jnp.stack([intersect, area_pred + area_label - intersect, area_pred, area_label])


def accumulate(totals: Optional[np.ndarray], counts) -> np.ndarray:
  """Host-side running sum in int64 (a whole validation set overflows int32)."""
  counts = np.asarray(jax.device_get(counts), np.int64)
  return counts if totals is None else totals + counts


def _nanmean(x: np.ndarray) -> float:
  kept = x[~np.isnan(x)]
  return float(kept.mean()) if kept.size else float('nan')


def summarize(totals: np.ndarray) -> Dict[str, Any]:
  """aAcc, mIoU, mAcc (floats in [0, 1]) and per-class IoU, Acc from accumulated counts."""
  intersect, union, _, label = np.asarray(totals, np.float64)
  with np.errstate(divide='ignore', invalid='ignore'):
    iou = intersect / union
    acc = intersect / label
    a_acc = intersect.sum() / label.sum()
  return {'aAcc': float(a_acc), 'mIoU': _nanmean(iou), 'mAcc': _nanmean(acc),
          'IoU': iou, 'Acc': acc}
