"""`seg_shapes`: generated scenes of discs, squares and triangles, a segmentation dataset
small enough to learn on a laptop CPU in minutes (the segmentation demo, configs/upernet_demo.py).

A TFDS builder like `ade20k`, with the same features, so the demo runs the real path:
ArrayRecord files, random access, the ADE20K transforms. Each 96x128 image has a background
of random colour and one to three shapes of random size and place, each class in its own
range of colours (discs reddish, squares greenish, triangles bluish), all with pixel noise;
the label is the class of each pixel, later shapes covering earlier ones. Pixels on a shape's border, half covered,
are labelled 255 (ignored), as ADE20K leaves unlabelled pixels. The scenes depend only on
the split and the example index, so every build gives the same dataset.
"""
import contextlib
import io
import logging

from absl import logging as absl_logging
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

NAME = 'seg_shapes'
CLASS_NAMES = ('background', 'disc', 'square', 'triangle')
_CLASS_COLOURS = ((0, 0, 0), (200, 60, 60), (60, 190, 70), (60, 80, 210))  # RGB, +-40
IGNORE_INDEX = 255
HEIGHT, WIDTH = 96, 128
SPLIT_SIZES = {'train': 480, 'validation': 48}
_SPLIT_SEEDS = {'train': 0, 'validation': 1}


def _coverage(kind: int, cy: float, cx: float, r: float, height: int, width: int
              ) -> np.ndarray:
  """Fraction of each pixel inside the shape, from 4x4 samples per pixel: float [H, W]."""
  sub = (np.arange(4) + 0.5) / 4
  y = (np.arange(height)[:, None] + sub[None, :]).reshape(-1)[:, None]
  x = (np.arange(width)[:, None] + sub[None, :]).reshape(-1)[None, :]
  dy, dx = y - cy, x - cx
  if kind == 1:
    inside = dy ** 2 + dx ** 2 <= r ** 2
  elif kind == 2:
    inside = (np.abs(dy) <= r) & (np.abs(dx) <= r)
  else:  # equilateral, apex up at cy - r, base at cy + r / 2 (half-width r * sqrt(3) / 2)
    t = (dy + r) / (1.5 * r)  # 0 at the apex, 1 at the base
    inside = (t >= 0) & (t <= 1) & (np.abs(dx) <= t * r * np.sqrt(3) / 2)
  return inside.reshape(height, 4, width, 4).mean(axis=(1, 3))


def scene(split: str, index: int) -> tuple:
  """(image uint8 [96, 128, 3], label uint8 [96, 128]) of example `index` of `split`."""
  rng = np.random.default_rng([_SPLIT_SEEDS[split], index])
  image = np.broadcast_to(rng.uniform(0, 255, 3), (HEIGHT, WIDTH, 3))
  label = np.zeros((HEIGHT, WIDTH), np.uint8)
  for _ in range(rng.integers(1, 4)):
    kind = int(rng.integers(1, len(CLASS_NAMES)))
    r = rng.uniform(10, 28)
    cover = _coverage(kind, rng.uniform(0, HEIGHT), rng.uniform(0, WIDTH), r, HEIGHT, WIDTH)
    colour = np.array(_CLASS_COLOURS[kind]) + rng.uniform(-40, 40, 3)
    image = image * (1 - cover[..., None]) + colour * cover[..., None]
    label[cover == 1] = kind
    label[(cover > 0) & (cover < 1)] = IGNORE_INDEX
  image = image + rng.normal(0, 12, image.shape)
  return np.clip(image, 0, 255).round().astype(np.uint8), label


def _png(array: np.ndarray) -> bytes:
  encoded = io.BytesIO()
  Image.fromarray(array).save(encoded, format='PNG')
  return encoded.getvalue()


class SegShapes(tfds.core.GeneratorBasedBuilder):
  """Generated scenes of discs, squares and triangles for semantic segmentation."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Discs, squares and triangles on noise, 96x128, border pixels 255.'}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description='Generated shapes on noise, 4 classes (smt_jax segmentation demo).',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3), encoding_format='png'),
            'segmentation': tfds.features.Image(shape=(None, None, 1), encoding_format='png'),
            'file_name': tfds.features.Text(),
        }),
        supervised_keys=('image', 'segmentation'),
        metadata=tfds.core.MetadataDict(class_names=list(CLASS_NAMES),
                                        ignore_index=IGNORE_INDEX),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # nothing to download
    return {split: self._generate_examples(split) for split in SPLIT_SIZES}

  def _generate_examples(self, split: str):
    for index in range(SPLIT_SIZES[split]):
      image, label = scene(split, index)
      file_name = f'{split}_{index:05d}.png'
      yield file_name, {'image': _png(image), 'segmentation': _png(label),
                        'file_name': file_name}


def build(data_dir: str) -> str:
  """Prepares seg_shapes in ArrayRecord under `data_dir` (once) and returns `data_dir`.

  TFDS's notices go to the log, not the terminal, and its progress bars are off (a few
  seconds' work; in a notebook they would need ipywidgets).
  """
  printed = io.StringIO()
  absl_logger = logging.getLogger('absl')
  level = absl_logger.level
  absl_logger.setLevel(logging.ERROR)
  tfds.display_progress_bar(False)
  try:
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
      builder = SegShapes(data_dir=data_dir)
      if not builder.is_prepared():
        builder.download_and_prepare(file_format='array_record')
  finally:
    absl_logger.setLevel(level)
    tfds.display_progress_bar(True)
  if printed.getvalue():
    absl_logging.info('Built %s in %s:\n%s', NAME, data_dir, printed.getvalue())
  return data_dir
