"""seg_metrics against a hand-computed case, a plain numpy version of mmseg's
intersect_and_union / total_area_to_metrics, and on a batch sharded over 4 devices."""
import json
import pathlib
import subprocess
import sys

import jax
import numpy as np

from smt_jax.train import seg_metrics

HERE = pathlib.Path(__file__).parent


def numpy_areas(pred, label, num_classes, ignore_index=255):
  """mmseg intersect_and_union on one image, in numpy."""
  keep = label != ignore_index
  pred, label = pred[keep], label[keep]
  bins = np.arange(num_classes + 1)
  intersect = np.histogram(pred[pred == label], bins)[0]
  area_pred = np.histogram(pred, bins)[0]
  area_label = np.histogram(label, bins)[0]
  return np.stack([intersect, area_pred + area_label - intersect, area_pred, area_label])


def test_hand_computed():
  label = np.array([[[0, 0, 1, 1, 2, 255]], [[1, 1, 1, 1, 1, 1]]])
  pred = np.array([[[0, 4, 1, 1, 0, 3]], [[0, 0, 0, 0, 0, 0]]])
  valid = np.array([True, False])[:, None, None]  # the second image is padding
  counts = jax.jit(seg_metrics.area_counts, static_argnums=2)(pred, label, 5, valid)
  np.testing.assert_array_equal(counts, [[1, 2, 0, 0, 0],    # intersect
                                         [3, 2, 1, 0, 1],    # union
                                         [2, 2, 0, 0, 1],    # pred
                                         [2, 2, 1, 0, 0]])   # label
  scores = seg_metrics.summarize(seg_metrics.accumulate(None, counts))
  np.testing.assert_allclose(scores['IoU'], [1 / 3, 1, 0, np.nan, 0])  # 3: never seen
  np.testing.assert_allclose(scores['Acc'], [1 / 2, 1, 0, np.nan, np.nan])
  np.testing.assert_allclose(scores['mIoU'], (1 / 3 + 1 + 0 + 0) / 4)
  np.testing.assert_allclose(scores['mAcc'], 0.5)
  np.testing.assert_allclose(scores['aAcc'], 3 / 5)


def test_random_batches_against_numpy():
  rng = np.random.default_rng(0)
  num_classes, totals, reference = 7, None, 0
  count = jax.jit(seg_metrics.area_counts, static_argnums=2)
  for _ in range(3):
    label = rng.integers(0, num_classes, (4, 9, 11))
    label[rng.random(label.shape) < 0.2] = 255
    pred = np.where(rng.random(label.shape) < 0.5, label % num_classes,
                    rng.integers(0, num_classes, label.shape))
    heights = rng.integers(1, 10, 4)  # images padded to one size: valid top rows only
    valid = np.arange(9)[None, :, None] < heights[:, None, None]
    totals = seg_metrics.accumulate(totals, count(pred, label, num_classes, valid))
    for i in range(4):
      reference = reference + numpy_areas(pred[i, :heights[i]], label[i, :heights[i]],
                                          num_classes)
  np.testing.assert_array_equal(totals, reference)
  scores = seg_metrics.summarize(totals)
  intersect, union, _, area_label = reference
  np.testing.assert_allclose(scores['mIoU'], np.nanmean(intersect / union))
  np.testing.assert_allclose(scores['mAcc'], np.nanmean(intersect / area_label))
  np.testing.assert_allclose(scores['aAcc'], intersect.sum() / area_label.sum())


def test_sharded_global_batch():
  worker = subprocess.run([sys.executable, str(HERE / 'seg_metrics_sharded_worker.py')],
                          capture_output=True, text=True, check=False)
  assert worker.returncode == 0, worker.stderr[-3000:]
  result = json.loads(worker.stdout.strip().splitlines()[-1])
  assert result['devices'] == 4 and result['shards'] == 4
  assert result['sharded'] == result['reference']
