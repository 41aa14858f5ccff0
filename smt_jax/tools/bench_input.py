r"""Training input pipeline throughput: images per second, and per CPU core.

  python -m smt_jax.tools.bench_input --config=configs/smt_t.py --config.batch_size=128 \
      --config.data_dir=gs://BUCKET/tensorflow_datasets
  python -m smt_jax.tools.bench_input --config=configs/smt_t.py --config.batch_size=128 --mock

Runs the real training pipeline (decode, random resized crop, flip, RandAugment, batching)
as one process and times it; no accelerator is used. `config.batch_size` is the batch of
this one process. `--mock` first writes a TFDS dataset
of generated ImageNet-like JPEGs (about 500x375 pixels, 100-150 kB, like ImageNet's
median) to a temporary directory and reads it through the same code path.

Per core means per CPU-second the process used (user + system time over all threads), so
the figure does not depend on how many cores tf.data happened to get; the number of cores
actually busy is reported beside it.
"""
import os
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from ml_collections import config_flags

from smt_jax.data import iterators
from smt_jax.data import sources

FLAGS = flags.FLAGS


def _define_flags():
  """Flags live here, not at import, so importing this module defines no flags."""
  config_flags.DEFINE_config_file('config', None, 'Training config file.')
  flags.DEFINE_bool('mock', False, 'Read generated ImageNet-like JPEGs instead of '
                    'config.dataset.')
  flags.DEFINE_integer('mock_examples', 512, 'Images written with --mock.')
  flags.DEFINE_integer('warmup_batches', 10, 'Batches run before timing starts.')
  flags.DEFINE_integer('num_batches', 50, 'Batches timed.')

_MOCK_NAME = 'smt_bench_mock'


def _mock_image(rng: np.random.Generator) -> np.ndarray:
  """A photo-like image: smooth random colour fields plus fine texture."""
  h, w = (375, 500) if rng.random() < 0.7 else (500, 375)
  coarse = rng.integers(0, 256, (h // 25 + 1, w // 25 + 1, 3), dtype=np.uint8)
  image = tf.image.resize(coarse, (h, w), method='bicubic').numpy()
  image += rng.normal(0.0, 12.0, image.shape)
  return np.clip(image, 0, 255).astype(np.uint8)


def write_mock_dataset(data_dir: str, num_examples: int) -> None:
  rng = np.random.default_rng(0)
  examples = ((i, {'image': _mock_image(rng), 'label': i % 1000})
              for i in range(num_examples))
  tfds.dataset_builders.store_as_tfds_dataset(
      name=_MOCK_NAME, version='1.0.0', data_dir=data_dir,
      features=tfds.features.FeaturesDict({
          'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
          'label': tfds.features.ClassLabel(num_classes=1000)}),
      split_datasets={'train': examples})


def _cpu_seconds() -> float:
  times = os.times()
  return times.user + times.system


def benchmark(config) -> dict:
  """Times --num_batches batches of the training pipeline after --warmup_batches."""
  batches = iterators.TrainIterator(config, process_index=0, process_count=1)
  for _ in range(FLAGS.warmup_batches):
    next(batches)
  wall, cpu = time.perf_counter(), _cpu_seconds()
  for _ in range(FLAGS.num_batches):
    next(batches)
  wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
  images = FLAGS.num_batches * config.batch_size
  return {'images_per_s': images / wall, 'cores_busy': cpu / wall,
          'images_per_s_per_core': images / cpu}


def _cpu_model() -> str:
  with open('/proc/cpuinfo') as f:
    names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
  return f'{names[0] if names else "unknown CPU"}, {os.cpu_count()} logical cores'


def main(argv):
  del argv
  config = FLAGS.config
  with tempfile.TemporaryDirectory() as mock_dir:
    if FLAGS.mock:
      write_mock_dataset(mock_dir, FLAGS.mock_examples)
      config.dataset, config.data_dir = _MOCK_NAME, mock_dir
    try:
      result = benchmark(config)
    except sources.DatasetNotFoundError as error:
      sys.exit(f'error: {error}')
  print(f'dataset {config.dataset}, image_size {config.image_size}, '
        f'batch {config.batch_size}, machine: {_cpu_model()}')
  print(f'{result["images_per_s"]:.1f} images/s with {result["cores_busy"]:.2f} cores busy: '
        f'{result["images_per_s_per_core"]:.1f} images/s per core')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
