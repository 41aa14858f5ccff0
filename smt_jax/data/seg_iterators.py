"""Segmentation batches: the training stream's examples through the ADE20K transforms, and
the validation split batched by size for exact whole-image evaluation.

Training uses `iterators.TrainIterator` with `SegmentationExample`: the same global stream
(a function of seed and step, any number of processes), each example decoded and put
through `seg_augment.train_example` with its own generator. Batches are {'image' uint8
[b, crop_h, crop_w, 3], 'label' uint8 [b, crop_h, crop_w]} (255: ignored or padding).

Evaluation follows mmseg, which runs every validation image alone at its own test size and
scores it at its original size: no padding that the network would see. `SegEvalIterator`
groups the split's images by (test size, original size), read from the image headers once,
and cuts each group into global batches; the rows past a group's end are padding, with
mask False and labels 255, and count nowhere. Every batch of a group has one shape, so a
jitted evaluation step compiles once per group size and is reused by later evaluations;
a dataset of few distinct sizes (the demo: one) compiles few programs.
"""
import io
from typing import Any, Dict, Iterator, List, Optional, Tuple

import grain
import jax
import ml_collections
import numpy as np
from PIL import Image

from smt_jax.data import iterators
from smt_jax.data import seg_augment
from smt_jax.data import stream as stream_lib
from smt_jax.data import transforms

Batch = Dict[str, Any]


def decode_label(data: bytes) -> np.ndarray:
  """Encoded label map (PNG) -> uint8 [H, W]."""
  try:
    label = np.asarray(Image.open(io.BytesIO(data)))
  except Exception as e:  # PIL raises several types for damaged files.
    raise transforms.DecodeError(f'cannot decode the label map: {e}') from e
  return label[..., 0] if label.ndim == 3 else label


def _decode_pair(data: bytes, label_data: bytes) -> Tuple[np.ndarray, np.ndarray]:
  image, label = transforms.decode(data), decode_label(label_data)
  if image.shape[:2] != label.shape:
    raise transforms.DecodeError(f'image {image.shape[:2]} and label map {label.shape} '
                                 'differ in size')
  return image, label


class SegmentationExample:
  """(encoded image, encoded label map, generator) -> one augmented training example."""

  def __init__(self, aug: ml_collections.ConfigDict):
    self._aug = aug

  def __call__(self, data: bytes, label_data: bytes, rng: np.random.Generator) -> Batch:
    image, label = seg_augment.train_example(*_decode_pair(data, label_data), rng, self._aug)
    return {'image': image, 'label': label}


def _sizes(data: bytes, label_data: bytes) -> Tuple[int, int]:
  """(height, width) of an example from its headers, checking the label map's agrees."""
  try:
    width, height = Image.open(io.BytesIO(data)).size
    label_width, label_height = Image.open(io.BytesIO(label_data)).size
  except Exception as e:  # PIL raises several types for unreadable headers.
    raise transforms.DecodeError(f'cannot read the header: {e}') from e
  if (width, height) != (label_width, label_height):
    raise transforms.DecodeError(f'image {height}x{width} and label map '
                                 f'{label_height}x{label_width} differ in size')
  return height, width


class _EvalBatch:
  """(group shape, example indices, -1 for padding) -> this process's rows of the batch."""

  def __init__(self, source, rows: np.ndarray, aug: ml_collections.ConfigDict):
    self._source, self._rows, self._aug = source, rows, aug
    self._split = source.info.eval_split

  def __call__(self, planned: Tuple[Tuple[int, int, int, int], np.ndarray]) -> Batch:
    (h, w, height, width), indices = planned
    indices = indices[self._rows]
    images = np.zeros((len(indices), h, w, 3), np.uint8)
    labels = np.full((len(indices), height, width), seg_augment.IGNORE_INDEX, np.uint8)
    for i, index in enumerate(indices):
      if index < 0:
        continue
      try:
        images[i], labels[i] = seg_augment.eval_example(
            *_decode_pair(*self._source.example(self._split, int(index))), self._aug)
      except transforms.DecodeError as error:
        raise iterators.CorruptImageError(
            f'{_name(self._source, self._split, int(index))}: {error}. Evaluation counts '
            'every example, so repair or remove it (for a TFDS dataset, prepare it '
            'again).') from None
    return {'image': images, 'label': labels, 'mask': indices >= 0}


def _name(source, split: str, index: int) -> str:
  return f'Evaluation example {source.name(split, index)} (example {index} of split {split!r})'


class SegEvalIterator:
  """The validation split once, in batches of one shape each: {'image' uint8 [b, h, w, 3] at
  the test size, 'label' uint8 [b, H, W] at the original size, 'mask' bool [b]}.

  Iterate again for the next evaluation; the grouping is computed once.
  """

  def __init__(self, config: ml_collections.ConfigDict, *,
               sharding: Optional[jax.sharding.Sharding] = None,
               process_index: Optional[int] = None, process_count: Optional[int] = None,
               batch_size: Optional[int] = None):
    self._source = iterators.eval_source(config)
    self.info = self._source.info
    self._config, self._sharding = config, sharding
    self._global_batch_size = batch_size or config.batch_size
    self.plan = self._plan(config.aug)
    self._make_batch = _EvalBatch(self._source, stream_lib.process_rows(
        self._global_batch_size, sharding, process_index, process_count), config.aug)

  def _plan(self, aug) -> List[Tuple[Tuple[int, int, int, int], np.ndarray]]:
    """[(h, w, H, W), global batch of example indices (-1: padding)] in a fixed order."""
    split = self.info.eval_split
    groups: Dict[Tuple[int, int, int, int], List[int]] = {}
    for index in range(self.info.num_eval_examples):
      try:
        height, width = _sizes(*self._source.example(split, index))
      except transforms.DecodeError as error:
        raise iterators.CorruptImageError(
            f'{_name(self._source, split, index)}: {error}.') from None
      size = seg_augment.rescale_size(height, width, tuple(aug.img_scale))
      groups.setdefault((*size, height, width), []).append(index)
    plan = []
    size = self._global_batch_size
    for key in sorted(groups):
      members = groups[key]
      for start in range(0, len(members), size):
        chunk = members[start:start + size]
        plan.append((key, np.array(chunk + [-1] * (size - len(chunk)), np.int64)))
    return plan

  def __len__(self) -> int:
    return len(self.plan)

  def __iter__(self) -> Iterator[Batch]:
    batches = iter(iterators.parallel(
        grain.MapDataset.source(self.plan).map(self._make_batch), self._config))
    try:
      for batch in batches:
        yield (batch if self._sharding is None else iterators.to_global_arrays(
            batch, self._sharding, self._global_batch_size))
    finally:
      batches.close()

