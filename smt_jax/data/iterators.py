"""Python-side iterators: resumable training batches and exact evaluation batches.

Batches are this process's rows as numpy arrays, or, given a `jax.sharding.Sharding` of
the batch dimension, global `jax.Array`s (`to_global_arrays`).

Training state. `TrainIterator.get_state()` is a small JSON-able dict of this process: the
(epoch, position) of the next example and the number of images skipped so far. The
checkpoint stores one per process; `set_state` on the same process makes the iterator
continue exactly where the saved one would have: no example repeated, none skipped.

Corrupt images. Training skips an image that cannot be read or decoded: it is counted
(`TrainIterator.num_skipped`, also in the state) and logged with its file name (the
first `MAX_NAMED_SKIPS` per process; later ones are only counted, since naming one means
replaying the epoch's shuffle). Evaluation must see every image, so there a corrupt image
stops the run with `CorruptImageError` naming the file.
"""
import collections
import re
from typing import Any, Dict, Iterator, Mapping, Optional

from absl import logging
import jax
import ml_collections
import numpy as np
import tensorflow as tf

from smt_jax.data import pipeline
from smt_jax.data import sources
from smt_jax.data import transforms

MAX_NAMED_SKIPS = 10

Batch = Dict[str, Any]


class CorruptImageError(Exception):
  """An evaluation image cannot be read or decoded; the message names it."""


def to_global_arrays(batch: Mapping[str, np.ndarray],
                     sharding: jax.sharding.Sharding) -> Dict[str, jax.Array]:
  """One process's rows -> global arrays whose dimension 0 is split as `sharding` says.

  `sharding` is e.g. `NamedSharding(mesh, P(('data', 'fsdp')))`. This process's rows fill
  the shards on its own devices, in order; the global batch has process_count times as many
  rows. Every process calls it, each with its own rows.
  """
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def _processes(process_index: Optional[int], process_count: Optional[int]):
  return (jax.process_index() if process_index is None else process_index,
          jax.process_count() if process_count is None else process_count)


class TrainIterator:
  """Endless training batches {'image' uint8 [b, s, s, 3], 'label' int32 [b]} of this process.

  `b` is config.batch_size / process_count. With `sharding`, batches are global arrays and
  the next `device_prefetch` of them are already on their way to the devices.
  `shuffle_buffer_size` is the shuffle buffer of TFDS records (encoded images, about 110 kB
  each for ImageNet); an image folder's file paths are always shuffled all at once.
  """

  def __init__(self, config: ml_collections.ConfigDict, *,
               sharding: Optional[jax.sharding.Sharding] = None,
               process_index: Optional[int] = None, process_count: Optional[int] = None,
               shuffle_buffer_size: int = 16_384, device_prefetch: int = 2):
    self._source = sources.get_source(config)
    self.info = self._source.info
    self._process_index, self._process_count = _processes(process_index, process_count)
    self._batch_size = pipeline.local_batch_size(config.batch_size, self._process_count)
    self._image_size = config.image_size
    self._aug = config.aug
    self._seed = config.seed
    self._sharding = sharding
    self._queue_size = device_prefetch if sharding is not None else 1
    self._split = self.info.train_split
    self._start, stop = sources.process_range(
        self.info.num_train_examples, self._process_index, self._process_count)
    self._records = self._source.records(self._split, self._start, stop)
    if self._source.lazy_records:  # file paths: cheap to shuffle all at once
      shuffle_buffer_size = stop - self._start
    self._order = pipeline.TrainOrder(stop - self._start, shuffle_buffer_size, self._seed,
                                      self._process_index)
    # Examples are numbered epoch * num_examples + position. `_next` is the number of the
    # next example to deliver; `_read_next` of the next one to come out of tf.data.
    self._next = self.num_skipped = 0
    self._read_next = self._read_skipped = 0
    self._stream = None
    self._queue = collections.deque()

  def __iter__(self) -> Iterator[Batch]:
    return self

  def __next__(self) -> Batch:
    if self._stream is None:
      self._start_stream()
    while len(self._queue) < self._queue_size:
      self._queue.append(self._read())
    batch, self._next, self.num_skipped = self._queue.popleft()
    return batch

  def _start_stream(self):
    epoch, position = divmod(self._next, self._order.num_records)
    self._stream = pipeline.train_dataset(
        self._source, self._records, self._order, batch_size=self._batch_size,
        image_size=self._image_size, aug=self._aug, start_epoch=epoch,
        start_position=position).as_numpy_iterator()
    self._queue.clear()
    self._read_next, self._read_skipped = self._next, self.num_skipped

  def _read(self):
    batch = next(self._stream)
    numbers = batch.pop('epoch') * self._order.num_records + batch.pop('position')
    expected = np.concatenate([[self._read_next], numbers[:-1] + 1])
    for first, stop in zip(expected[numbers > expected], numbers[numbers > expected]):
      self._skipped(int(first), int(stop))
    self._read_next = int(numbers[-1]) + 1
    if self._sharding is not None:
      batch = to_global_arrays(batch, self._sharding)
    return batch, self._read_next, self._read_skipped

  def _skipped(self, first: int, stop: int):
    """Counts examples [first, stop), dropped by tf.data, and names the first few."""
    before = self._read_skipped
    named = max(0, min(stop - first, MAX_NAMED_SKIPS - before))
    for number in range(first, first + named):
      epoch, position = divmod(number, self._order.num_records)
      index = self._start + self._order.record_index(epoch, position)
      logging.warning('Skipped training image %s of split %r: it cannot be read or decoded '
                      '(process %d, epoch %d, position %d).',
                      self._source.name(self._split, index), self._split,
                      self._process_index, epoch, position)
    self._read_skipped += stop - first
    if stop - first > named and before <= MAX_NAMED_SKIPS:  # the cap is reached now
      logging.warning('%d training images skipped so far on process %d; further ones are '
                      'counted (TrainIterator.num_skipped) but not named.',
                      self._read_skipped, self._process_index)

  def get_state(self) -> Dict[str, int]:
    """This process's position, JSON-able; store one per process with each checkpoint."""
    epoch, position = divmod(self._next, self._order.num_records)
    return {'epoch': epoch, 'position': position, 'num_skipped': self.num_skipped,
            **self._identity()}

  def set_state(self, state: Mapping[str, int]):
    """Continues from `state`, saved by `get_state` of this process in an equal set-up."""
    mismatched = {k: (state.get(k), v) for k, v in self._identity().items()
                  if state.get(k) != v}
    if mismatched:
      raise ValueError(
          'The saved data iterator state belongs to a different input set-up, so resuming '
          'would not continue the same example stream. (saved, now): ' + ', '.join(
              f'{k}=({a}, {b})' for k, (a, b) in mismatched.items()))
    self._next = state['epoch'] * self._order.num_records + state['position']
    self.num_skipped = state['num_skipped']
    self._stream = None

  def _identity(self) -> Dict[str, int]:
    """What fixes this process's example stream; a state only fits an equal identity."""
    return {'process_index': self._process_index, 'process_count': self._process_count,
            'seed': self._seed, 'num_examples': self._order.num_records,
            'shuffle_buffer_size': self._order.buffer_size}


class EvalIterator:
  """The evaluation split once, as batches {'image' uint8, 'label' int32, 'mask' bool}.

  Every process yields `len(self)` batches of config.batch_size / process_count rows (or
  `batch_size` / process_count); rows with mask False are padding. Iterate again for the
  next evaluation.
  """

  def __init__(self, config: ml_collections.ConfigDict, *,
               sharding: Optional[jax.sharding.Sharding] = None,
               process_index: Optional[int] = None, process_count: Optional[int] = None,
               batch_size: Optional[int] = None):
    self._source = sources.get_source(config)
    self.info = self._source.info
    if self.info.eval_split is None:
      raise ValueError(f"Dataset '{self.info.name}' has no evaluation split (looked for "
                       f'{", ".join(sources.EVAL_SPLITS)}).')
    process_index, process_count = _processes(process_index, process_count)
    self._batch_size = pipeline.local_batch_size(batch_size or config.batch_size,
                                                 process_count)
    self._sharding = sharding
    self._split = self.info.eval_split
    self._start, stop = sources.process_range(self.info.num_eval_examples, process_index,
                                              process_count)
    self._num_records = stop - self._start
    self.num_batches = pipeline.eval_batches_per_process(
        self.info.num_eval_examples, process_count, self._batch_size)
    self._dataset = pipeline.eval_dataset(
        self._source, self._source.records(self._split, self._start, stop),
        self._num_records, num_batches=self.num_batches, batch_size=self._batch_size,
        image_size=config.image_size, aug=config.aug)

  def __len__(self) -> int:
    return self.num_batches

  def __iter__(self) -> Iterator[Batch]:
    stream = self._dataset.as_numpy_iterator()
    for index in range(self.num_batches):
      try:
        batch = next(stream)
      except tf.errors.OpError as error:
        self._raise_corrupt(index, error)
      yield batch if self._sharding is None else to_global_arrays(batch, self._sharding)

  def _raise_corrupt(self, batch_index: int, error: tf.errors.OpError):
    """Finds the image of batch `batch_index` that failed and names it, else re-raises."""
    first = self._start + batch_index * self._batch_size
    for index in range(first, min(first + self._batch_size, self._start + self._num_records)):
      try:
        transforms.decode(tf.constant(self._source.read(self._split, index)))
      except (tf.errors.OpError, OSError) as decode_error:
        reason = re.sub(r'\{\{.*?\}\}\s*|\s*\[Op:\w+\]', '',
                        getattr(decode_error, 'message', str(decode_error)))
        raise CorruptImageError(
            f'Evaluation image {self._source.name(self._split, index)} (example {index} of '
            f'split {self._split!r}) cannot be read or decoded: {reason} Evaluation counts '
            'every example, so repair or remove it (for a TFDS dataset, prepare it '
            'again).') from None
    raise error
