r"""Training input pipeline throughput: images per second, and per CPU core.

  python -m smt_jax.tools.bench_input --config=configs/smt_t.py --config.batch_size=128 --mock
  python -m smt_jax.tools.bench_input --config=configs/smt_t.py --config.batch_size=128 \
      --mock --official          # beside timm's pipeline in a PyTorch DataLoader
  python -m smt_jax.tools.bench_input --config=configs/smt_t.py --config.batch_size=128 \
      --config.data_dir=/mnt/disks/data/tensorflow_datasets   # your prepared data

Runs the real training input path (read, decode, random resized crop, flip, RandAugment,
batching) as one process with `--workers` worker processes (a comma list; 0 = threads of
this process only) and times it; no accelerator is used. `config.batch_size` is the batch of
this one process. `--mock` first writes an image folder of generated ImageNet-like JPEGs
(500x375 or 375x500 pixels, 100-150 kB, like ImageNet's median) to a temporary directory
and reads it through the same code path.

`--official` also times the official SMT recipe's input pipeline on the same files: timm's
`create_transform` with the official settings (RandAugment rand-m9-mstd0.5-inc1, bicubic,
random erasing 0.25 'pixel') on torchvision's `ImageFolder`, in a PyTorch `DataLoader` with
as many workers. It needs torch, torchvision and timm installed. That pipeline also
normalizes and erases on the host, which here happen on the accelerator.

Per core means per CPU-second used by this process and its worker processes (user + system
time of all their threads), so the figure does not depend on how many cores the pipeline
happened to get; the number of cores actually busy is reported beside it.
"""
import io
import os
import pathlib
import sys
import tempfile
import time
from typing import Callable, Dict, Iterator

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np
from PIL import Image
import psutil

from smt_jax.data import iterators
from smt_jax.data import sources

FLAGS = flags.FLAGS
_MOCK_CLASSES = 10


def _define_flags():
  """Flags live here, not at import, so importing this module defines no flags."""
  config_flags.DEFINE_config_file('config', None, 'Training config file.')
  flags.DEFINE_bool('mock', False, 'Read generated ImageNet-like JPEGs instead of '
                    'config.dataset.')
  flags.DEFINE_integer('mock_examples', 512, 'Images written with --mock.')
  flags.DEFINE_list('workers', ['0', '1', '2'], 'Worker processes to time, one run each.')
  flags.DEFINE_bool('official', False, "Also time timm's pipeline in a PyTorch DataLoader.")
  flags.DEFINE_integer('warmup_batches', 10, 'Batches run before timing starts.')
  flags.DEFINE_integer('num_batches', 50, 'Batches timed.')


def _mock_image(rng: np.random.Generator) -> Image.Image:
  """A photo-like image: smooth random colour fields plus fine texture."""
  w, h = (500, 375) if rng.random() < 0.7 else (375, 500)
  coarse = rng.integers(0, 256, (h // 25 + 1, w // 25 + 1, 3), dtype=np.uint8)
  smooth = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.float64)
  return Image.fromarray(np.clip(smooth + rng.normal(0.0, 12.0, smooth.shape), 0, 255)
                         .astype(np.uint8))


def write_mock_folder(root: str, num_examples: int) -> str:
  """ROOT/train/<class>/<i>.jpg of generated photo-like JPEGs; returns ROOT."""
  rng = np.random.default_rng(0)
  for i in range(num_examples):
    folder = pathlib.Path(root, 'train', f'class_{i % _MOCK_CLASSES:02d}')
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    _mock_image(rng).save(buffer, 'JPEG', quality=90)
    (folder / f'{i:05d}.jpg').write_bytes(buffer.getvalue())
  return root


def _cpu_seconds() -> float:
  """User + system time of this process and of its live descendants."""
  me = psutil.Process()
  total = 0.0
  for process in [me, *me.children(recursive=True)]:
    try:
      times = process.cpu_times()
      total += times.user + times.system
    except psutil.NoSuchProcess:
      pass
  return total


def _time(batches: Iterator, batch_size: int) -> Dict[str, float]:
  for _ in range(FLAGS.warmup_batches):
    next(batches)
  wall, cpu = time.perf_counter(), _cpu_seconds()
  for _ in range(FLAGS.num_batches):
    next(batches)
  wall, cpu = time.perf_counter() - wall, _cpu_seconds() - cpu
  images = FLAGS.num_batches * batch_size
  return {'images_per_s': images / wall, 'cores_busy': cpu / wall,
          'images_per_s_per_core': images / cpu}


def benchmark(config, workers: int) -> Dict[str, float]:
  """Times this project's training batches with `workers` worker processes."""
  config.data_workers = workers
  batches = iterators.TrainIterator(config, process_index=0, process_count=1)
  try:
    return _time(batches, config.batch_size)
  finally:
    batches.close()


def official_benchmark(config, root: str, workers: int) -> Dict[str, float]:
  """Times the official recipe's timm transform in a PyTorch DataLoader on ROOT/train."""
  import timm.data  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top

  torch.set_num_threads(1)
  transform = timm.data.create_transform(
      config.image_size, is_training=True, color_jitter=0.4,
      auto_augment='rand-m9-mstd0.5-inc1', interpolation='bicubic', re_prob=0.25,
      re_mode='pixel', re_count=1)
  dataset = torchvision.datasets.ImageFolder(os.path.join(root, 'train'), transform)
  loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, shuffle=True,
                                       num_workers=workers, drop_last=True,
                                       persistent_workers=workers > 0)

  def endless():
    while True:
      yield from loader

  return _time(endless(), config.batch_size)


def _cpu_model() -> str:
  with open('/proc/cpuinfo') as f:
    names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
  return f'{names[0] if names else "unknown CPU"}, {os.cpu_count()} logical cores'


def _report(name: str, workers: int, result: Dict[str, float]):
  print(f'{name:<9} {workers:>7} {result["images_per_s"]:>10.1f} {result["cores_busy"]:>10.2f} '
        f'{result["images_per_s_per_core"]:>15.1f}', flush=True)


def main(argv):
  del argv
  config = FLAGS.config
  workers = [int(w) for w in FLAGS.workers]
  with tempfile.TemporaryDirectory() as mock_dir:
    if FLAGS.mock:
      config.dataset, config.data_dir = 'folder', write_mock_folder(mock_dir,
                                                                    FLAGS.mock_examples)
    try:
      sources.get_source(config)
    except sources.DatasetNotFoundError as error:
      sys.exit(f'error: {error}')
    print(f'dataset {config.dataset}, image_size {config.image_size}, '
          f'batch {config.batch_size}, threads {config.data_threads}, machine: {_cpu_model()}')
    print('pipeline  workers   images/s cores busy images/s/core')
    runs: Dict[str, Callable[[int], Dict[str, float]]] = {
        'smt_jax': lambda w: benchmark(config, w)}
    if FLAGS.official:
      if config.dataset != 'folder':
        sys.exit('error: --official reads an image folder: use --mock or '
                 "--config.dataset=folder.")
      runs['official'] = lambda w: official_benchmark(config, config.data_dir, w)
    for count in workers:
      for name, run in runs.items():
        _report(name, count, run(count))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
