"""Training and evaluation batches of one process, built with Grain from a random-access source.

Batches are this process's rows (`stream.process_rows`) as numpy arrays, or, given a
`jax.sharding.Sharding` of the batch dimension, global `jax.Array`s: every process passes
its rows and `jax.make_array_from_process_local_data` assembles the global batch, which
is the same whatever the number of processes.

Work. Each batch is one Grain element: its rows are read, decoded and augmented one after
the other; `config.data_threads` batches are built at once in threads of this process, or,
with `config.data_workers` > 0, in that many worker processes (each with its threads), and
come back in step order either way. Decoding and resizing release Python's lock; worker
processes also spread the Python parts of augmentation over cores.

Corrupt images. Training replaces an image that cannot be read or decoded by the next
example of the same epoch's order, so the batch keeps its size and the stream stays a
function of (seed, step). Replacements are counted (`TrainIterator.num_skipped`) and the
first `MAX_NAMED_SKIPS` of each process are logged with their file names. Evaluation must
see every image, so there a corrupt image stops the run with `CorruptImageError` naming it.
"""
import collections
import math
from typing import Any, Dict, Iterator, List, Mapping, Optional

from absl import flags
from absl import logging
import grain
import jax
import ml_collections
import numpy as np

from smt_jax.data import sources
from smt_jax.data import stream as stream_lib
from smt_jax.data import transforms

MAX_NAMED_SKIPS = 10
_STEPS_LIMIT = 2 ** 62  # "forever" for the step counter

Batch = Dict[str, Any]


class CorruptImageError(Exception):
  """An evaluation image cannot be read or decoded; the message names it."""


def to_global_arrays(batch: Mapping[str, np.ndarray], sharding: jax.sharding.Sharding,
                     global_batch_size: int) -> Dict[str, jax.Array]:
  """This process's rows -> global arrays whose dimension 0 is split as `sharding` says.

  Every process calls it, each with its rows of the global batch (`stream.process_rows`).
  """
  return {k: jax.make_array_from_process_local_data(
      sharding, v, (global_batch_size,) + v.shape[1:]) for k, v in batch.items()}


def stream_identity(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """What fixes the training stream; a checkpoint's stream continues only if this is equal."""
  return {'dataset': config.dataset, 'seed': config.seed, 'batch_size': config.batch_size,
          'num_examples': sources.dataset_info(config).num_train_examples}


def check_resumable(saved: Mapping[str, Any], config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming every field in which `saved` differs from `config`'s stream."""
  now = stream_identity(config)
  different = [f'{k}: saved {saved.get(k)!r}, now {v!r}' for k, v in now.items()
               if saved.get(k) != v]
  if different:
    raise ValueError(
        'The checkpoint was trained on a different example stream, so resuming would not '
        'continue it (' + '; '.join(different) + '). Use the saved settings, or a new '
        'workdir to start over.')


def _read_options(config: ml_collections.ConfigDict) -> grain.ReadOptions:
  return grain.ReadOptions(num_threads=config.data_threads,
                           prefetch_buffer_size=config.data_threads)


def parallel(dataset: grain.MapDataset, config: ml_collections.ConfigDict
             ) -> grain.IterDataset:
  """`dataset` read by config.data_threads threads, in config.data_workers processes if > 0."""
  dataset = dataset.to_iter_dataset(_read_options(config))
  if config.data_workers > 0:
    if not flags.FLAGS.is_parsed():  # Grain's worker start reads its absl flags; callers
      flags.FLAGS.mark_as_parsed()   # outside an absl app (notebooks, tests) never parse them
    dataset = dataset.mp_prefetch(grain.MultiprocessingOptions(num_workers=config.data_workers))
  return dataset


class ClassificationExample:
  """(encoded image, class id, generator) -> one augmented training example (pickled to workers)."""

  def __init__(self, image_size: int, aug: ml_collections.ConfigDict):
    self._image_size, self._aug = image_size, aug

  def __call__(self, data: bytes, label: int, rng: np.random.Generator) -> Dict[str, Any]:
    return {'image': transforms.train_image(data, rng, self._image_size, self._aug),
            'label': np.int32(label)}


class _TrainBatch:
  """Step -> this process's rows of that global batch (a Grain map; pickled to workers)."""

  def __init__(self, source, stream: stream_lib.TrainStream, rows: np.ndarray,
               global_batch_size: int, make_example):
    self._source, self._stream, self._rows = source, stream, rows
    self._split = source.info.train_split
    self._global_batch_size, self._make_example = global_batch_size, make_example

  def __call__(self, step: int) -> Batch:
    examples, skipped = [], []
    for row in self._rows:
      epoch, position = self._stream.locate(step * self._global_batch_size + int(row))
      examples.append(self._example(epoch, position, skipped))
    batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
    batch['skipped'] = np.array(skipped, np.int64)
    return batch

  def _example(self, epoch: int, position: int, skipped: List[int]) -> Dict[str, Any]:
    """The example at `position` of `epoch`, or the first readable one after it."""
    for offset in range(min(self._stream.num_examples, 100)):
      index = self._stream.index(epoch, (position + offset) % self._stream.num_examples)
      data, target = self._source.example(self._split, index)
      try:
        return self._make_example(data, target, self._stream.rng(epoch, index))
      except transforms.DecodeError:
        skipped.append(index)
    raise CorruptImageError(
        f'{len(skipped)} training images in a row of split {self._split!r} cannot be read or '
        f'decoded, the last {self._source.name(self._split, skipped[-1])}: the dataset looks '
        'damaged. Prepare it again.')


class TrainIterator:
  """Endless training batches of this process: {'image' uint8 [b, s, s, 3], 'label' int32
  [b]}, or what `make_example` gives per example, stacked.

  Starts at global batch `start_step` (0-based: the batch of update start_step + 1). With
  `sharding`, batches are global arrays of config.batch_size rows and the next
  `device_prefetch` of them are already on their way to the devices. `make_example(data,
  target, rng)` turns a source's example into arrays (default: `ClassificationExample`);
  it raises `transforms.DecodeError` for an image that cannot be decoded.
  """

  def __init__(self, config: ml_collections.ConfigDict, *, start_step: int = 0,
               sharding: Optional[jax.sharding.Sharding] = None,
               process_index: Optional[int] = None, process_count: Optional[int] = None,
               device_prefetch: int = 2, make_example=None):
    self._source = sources.get_source(config)
    self.info = self._source.info
    self._global_batch_size = config.batch_size
    rows = stream_lib.process_rows(config.batch_size, sharding, process_index, process_count)
    self._process_index = jax.process_index() if process_index is None else process_index
    self._sharding = sharding
    self._queue_size = device_prefetch if sharding is not None else 1
    make_batch = _TrainBatch(
        self._source, stream_lib.TrainStream(self.info.num_train_examples, config.seed),
        rows, config.batch_size,
        make_example or ClassificationExample(config.image_size, config.aug))
    self._batches = iter(parallel(
        grain.MapDataset.range(start_step, _STEPS_LIMIT).map(make_batch), config))
    self._queue = collections.deque()
    self.num_skipped = 0

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    while len(self._queue) < self._queue_size:
      self._queue.append(self._read())
    return self._queue.popleft()

  def close(self):
    """Stops the threads and worker processes; call it when done with the iterator."""
    self._batches.close()
    self._queue.clear()

  def _read(self) -> Batch:
    batch = next(self._batches)
    for index in batch.pop('skipped'):
      self._skipped(int(index))
    if self._sharding is not None:
      batch = to_global_arrays(batch, self._sharding, self._global_batch_size)
    return batch

  def _skipped(self, index: int):
    self.num_skipped += 1
    split = self.info.train_split
    if self.num_skipped <= MAX_NAMED_SKIPS:
      logging.warning('Skipped training image %s (example %d of split %r): it cannot be read '
                      'or decoded; the next example of the epoch took its place (process %d).',
                      self._source.name(split, index), index, split, self._process_index)
    if self.num_skipped == MAX_NAMED_SKIPS:
      logging.warning('%d training images skipped on process %d; further ones are counted '
                      '(TrainIterator.num_skipped) but not named.', MAX_NAMED_SKIPS,
                      self._process_index)


class _EvalBatch:
  """Batch number -> this process's rows of that global evaluation batch, padded."""

  def __init__(self, source, rows: np.ndarray, global_batch_size: int, image_size: int,
               aug: ml_collections.ConfigDict):
    self._source, self._rows = source, rows
    self._split = source.info.eval_split
    self._num_examples = source.info.num_eval_examples
    self._global_batch_size, self._image_size, self._aug = global_batch_size, image_size, aug

  def __call__(self, batch_index: int) -> Batch:
    size = self._image_size
    images = np.zeros((len(self._rows), size, size, 3), np.uint8)
    labels = np.zeros(len(self._rows), np.int32)
    indices = batch_index * self._global_batch_size + self._rows
    for i, index in enumerate(indices[indices < self._num_examples]):
      data, labels[i] = self._source.example(self._split, int(index))
      try:
        images[i] = transforms.eval_image(data, size, self._aug)
      except transforms.DecodeError as error:
        raise CorruptImageError(
            f'Evaluation image {self._source.name(self._split, int(index))} (example {index} '
            f'of split {self._split!r}) cannot be read or decoded: {error}. Evaluation counts '
            'every example, so repair or remove it (for a TFDS dataset, prepare it '
            'again).') from None
    return {'image': images, 'label': labels, 'mask': indices < self._num_examples}


def eval_source(config: ml_collections.ConfigDict):
  """The configured source; ValueError if its dataset has no evaluation split."""
  source = sources.get_source(config)
  if source.info.eval_split is None:
    raise ValueError(f"Dataset '{source.info.name}' has no evaluation split (looked for "
                     f'{", ".join(sources.EVAL_SPLITS)}).')
  return source


class EvalIterator:
  """The evaluation split once, as batches {'image' uint8, 'label' int32, 'mask' bool}.

  `len(self)` global batches of `batch_size` (default config.batch_size) rows; rows with
  mask False are padding. Iterate again for the next evaluation.
  """

  def __init__(self, config: ml_collections.ConfigDict, *,
               sharding: Optional[jax.sharding.Sharding] = None,
               process_index: Optional[int] = None, process_count: Optional[int] = None,
               batch_size: Optional[int] = None):
    self._source = eval_source(config)
    self.info = self._source.info
    self._config = config
    self._global_batch_size = batch_size or config.batch_size
    rows = stream_lib.process_rows(self._global_batch_size, sharding, process_index,
                                   process_count)
    self._sharding = sharding
    self.num_batches = math.ceil(self.info.num_eval_examples / self._global_batch_size)
    self._make_batch = _EvalBatch(self._source, rows, self._global_batch_size,
                                  config.image_size, config.aug)

  def __len__(self) -> int:
    return self.num_batches

  def __iter__(self) -> Iterator[Batch]:
    batches = iter(parallel(
        grain.MapDataset.range(self.num_batches).map(self._make_batch), self._config))
    try:
      for batch in batches:
        yield (batch if self._sharding is None
               else to_global_arrays(batch, self._sharding, self._global_batch_size))
    finally:
      batches.close()
