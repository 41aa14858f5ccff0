"""tf.data pipelines of one process: augmented training batches and padded evaluation batches.

Training. Each process walks its own records epoch after epoch. Epoch e visits them in the
order of a shuffle buffer seeded by (seed, process, e); the k-th example of that order,
its *position*, is augmented with randomness seeded by (seed, process, e, k) only. So the
stream is a pure function of (seed, process_index, process_count) and a run resumed at
(epoch, position) sees exactly what the uninterrupted run saw next: resuming skips
`position` records of the shuffled order before any file is read (folders) or image is
decoded (TFDS). Batches run across epoch boundaries, so no example is dropped; every
element carries its (epoch, position) for the iterator's bookkeeping.

Corrupt images (training): an image that fails to read or decode is skipped, not fatal.
tf.data drops the element and logs TensorFlow's error; the iterator sees the gap in
positions, counts it, and logs which file it was (`iterators.TrainIterator`).

Host / device split. The host decodes, crops, flips and applies RandAugment, and emits uint8
images: a quarter of the float32 bytes to move to the accelerators, and the only steps
that need per-image control flow. Normalization, random erasing and Mixup/CutMix are cheap
elementwise work done on the accelerators inside the jitted train step
(`device_augment.make_prepare`), which keeps the host, the usual bottleneck, lighter.

Evaluation. Every process yields the same number of batches; its records are followed by
padding examples with mask False, so each example of the split is counted exactly once.
"""
import math

import ml_collections
import tensorflow as tf

from smt_jax.data import randaugment as randaugment_lib
from smt_jax.data import transforms

_EPOCHS_LIMIT = 2 ** 31  # "forever" for the epoch counter
# The per-example functions have no Python control flow on tensors; converting them with
# autograph would only add seconds of tracing to every pipeline built.
_graph_fn = tf.autograph.experimental.do_not_convert


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  return options


class TrainOrder:
  """The order in which one process visits its training records, and per-example seeds."""

  def __init__(self, num_records: int, shuffle_buffer_size: int, seed: int,
               process_index: int):
    self.num_records = num_records
    self.buffer_size = max(1, min(shuffle_buffer_size, num_records))
    self._key = tf.constant([seed, process_index], tf.int64)

  def _epoch_keys(self, epoch: tf.Tensor) -> tf.Tensor:
    """[shuffle key, augmentation key] of `epoch`."""
    return tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(self._key, tf.cast(epoch, tf.int64)), 2)

  def shuffle(self, ds: tf.data.Dataset, epoch: tf.Tensor) -> tf.data.Dataset:
    seed = tf.random.stateless_uniform([], self._epoch_keys(epoch)[0], minval=None,
                                       maxval=None, dtype=tf.int64)
    return ds.shuffle(self.buffer_size, seed=seed, reshuffle_each_iteration=False)

  def example_seed(self, epoch: tf.Tensor, position: tf.Tensor) -> tf.Tensor:
    return tf.random.experimental.stateless_fold_in(self._epoch_keys(epoch)[1], position)

  def record_index(self, epoch: int, position: int) -> int:
    """Which record (0-based, within this process) `position` of `epoch` is.

    Replays the shuffle on record indices: tf.data's shuffle permutes by seed and buffer
    size only, whatever the elements are.
    """
    order = self.shuffle(tf.data.Dataset.range(self.num_records), tf.constant(epoch, tf.int64))
    return int(next(iter(order.skip(position).take(1))))


def _train_image(data: tf.Tensor, seed: tf.Tensor, image_size: int,
                 aug: ml_collections.ConfigDict) -> tf.Tensor:
  crop_seed, flip_seed, randaugment_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 3))
  if aug.random_resized_crop:
    image = transforms.decode_random_resized_crop(data, crop_seed, image_size,
                                                  aug.crop_scale, aug.crop_ratio)
  else:
    image = transforms.eval_image(transforms.decode(data), image_size, aug.eval_crop_pct,
                                  aug.eval_center_crop)
  if aug.hflip:
    image = transforms.random_flip(image, flip_seed)
  if aug.randaugment_num_ops:
    image = randaugment_lib.randaugment(
        image, randaugment_seed, num_ops=aug.randaugment_num_ops,
        magnitude=aug.randaugment_magnitude, magnitude_std=aug.randaugment_magnitude_std,
        increasing=aug.randaugment_increasing, op_prob=aug.randaugment_op_prob)
  return image


def train_dataset(source, records: tf.data.Dataset, order: TrainOrder, *, batch_size: int,
                  image_size: int, aug: ml_collections.ConfigDict, start_epoch: int = 0,
                  start_position: int = 0) -> tf.data.Dataset:
  """Endless batches {'image' uint8 [b, s, s, 3], 'label' int32 [b], 'epoch', 'position'}.

  `records` are this process's training records in stored order, `order` their visiting
  order; the stream starts at (`start_epoch`, `start_position`).
  """
  if order.num_records == 0:
    raise ValueError('This process has no training examples: the split has fewer examples '
                     'than there are processes.')

  @_graph_fn
  def epoch_records(epoch):
    ds = order.shuffle(records, epoch).enumerate()
    ds = ds.skip(tf.where(epoch == start_epoch, tf.constant(start_position, tf.int64), 0))
    return ds.map(_graph_fn(lambda position, r: dict(r, epoch=epoch, position=position)))

  @_graph_fn
  def preprocess(r):
    seed = order.example_seed(r['epoch'], r['position'])
    return {'image': _train_image(source.load(r['image']), seed, image_size, aug),
            'label': tf.cast(r['label'], tf.int32),
            'epoch': r['epoch'], 'position': r['position']}

  ds = tf.data.Dataset.range(start_epoch, _EPOCHS_LIMIT).flat_map(epoch_records)
  ds = ds.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.ignore_errors(log_warning=True)
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def eval_batches_per_process(num_examples: int, process_count: int, batch_size: int) -> int:
  """Batches every process yields: enough for the largest per-process share."""
  return math.ceil(math.ceil(num_examples / process_count) / batch_size)


def eval_dataset(source, records: tf.data.Dataset, num_records: int, *, num_batches: int,
                 batch_size: int, image_size: int,
                 aug: ml_collections.ConfigDict) -> tf.data.Dataset:
  """`num_batches` batches {'image' uint8, 'label' int32, 'mask' bool}; padding has mask False."""

  @_graph_fn
  def preprocess(r):
    image = transforms.eval_image(transforms.decode(source.load(r['image'])), image_size,
                                  aug.eval_crop_pct, aug.eval_center_crop)
    return {'image': image, 'label': tf.cast(r['label'], tf.int32), 'mask': tf.constant(True)}

  padding = {'image': tf.zeros([image_size, image_size, 3], tf.uint8),
             'label': tf.constant(0, tf.int32), 'mask': tf.constant(False)}
  ds = records.map(preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  ds = ds.concatenate(
      tf.data.Dataset.from_tensors(padding).repeat(num_batches * batch_size - num_records))
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(_options())


def local_batch_size(global_batch_size: int, process_count: int) -> int:
  """Examples per process and step; the global batch must split evenly over processes."""
  if global_batch_size % process_count:
    raise ValueError(f'config.batch_size={global_batch_size} (global) does not split evenly '
                     f'over {process_count} processes.')
  return global_batch_size // process_count
