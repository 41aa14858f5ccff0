"""Helpers for the input-pipeline tests: tiny datasets written on the fly, small configs.

`write_imagenet_manual_dir` writes what the real TFDS `imagenet2012` builder reads (the
ILSVRC2012 train tar of per-synset tars, and the validation tar). `write_id_folder` writes
an image-folder tree of PNGs whose constant colour encodes each image's id, so a test can
tell which example a batch row came from after any geometric augmentation.
"""
import io
import pathlib
import socket
import tarfile

import ml_collections
import numpy as np
from PIL import Image

from smt_jax.data import aug_config

# Real ImageNet synsets, at label indices 0, 1, 2 of TFDS's labels.txt.
SYNSETS = ('n01440764', 'n01443537', 'n01484850')
IMAGES_PER_SYNSET = 4
NUM_VAL = 10
ID_FOLDER_SPLITS = {'train': 13, 'val': 10}
ID_FOLDER_CLASSES = ('ant', 'bee', 'cat')


def make_config(**overrides) -> ml_collections.ConfigDict:
  """The data fields of the training config, small: 32-pixel images, batch 4."""
  config = ml_collections.ConfigDict({
      'dataset': 'folder', 'data_dir': None, 'image_size': 32, 'batch_size': 4, 'seed': 0,
      'data_threads': 4, 'data_workers': 0, 'aug': aug_config.default_aug_config()})
  for key, value in overrides.items():
    target = config.aug if key in config.aug else config
    setattr(target, key, value)
  return config


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def jpeg_bytes(rng: np.random.Generator, height: int, width: int) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
      buffer, 'JPEG')
  return buffer.getvalue()


def id_color(example_id: int) -> tuple:
  return (example_id, 200 - example_id, 50 + 3 * example_id)


def decode_id(image: np.ndarray) -> int:
  """The id of a constant-colour image (any crop or resize of one)."""
  return int(image[image.shape[0] // 2, image.shape[1] // 2, 0])


def _add(tar: tarfile.TarFile, name: str, data: bytes):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def write_imagenet_manual_dir(manual_dir: pathlib.Path):
  """The two tars `tfds build imagenet2012` reads, with small generated JPEGs."""
  rng = np.random.default_rng(0)
  manual_dir.mkdir(parents=True)
  with tarfile.open(manual_dir / 'ILSVRC2012_img_train.tar', 'w') as train:
    for synset in SYNSETS:
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode='w') as synset_tar:
        for i in range(IMAGES_PER_SYNSET):
          _add(synset_tar, f'{synset}_{i}.JPEG', jpeg_bytes(rng, 40 + 4 * i, 48))
      _add(train, f'{synset}.tar', inner.getvalue())
  with tarfile.open(manual_dir / 'ILSVRC2012_img_val.tar', 'w') as val:
    for i in range(1, NUM_VAL + 1):
      _add(val, f'ILSVRC2012_val_{i:08d}.JPEG', jpeg_bytes(rng, 44, 36))


def write_id_folder(root: pathlib.Path, splits=None) -> pathlib.Path:
  """root/<split>/<class>/<id>.png, constant colour `id_color(id)`, ids unique per split."""
  for split, count in (splits or ID_FOLDER_SPLITS).items():
    for example_id in range(count):
      folder = root / split / ID_FOLDER_CLASSES[example_id % len(ID_FOLDER_CLASSES)]
      folder.mkdir(parents=True, exist_ok=True)
      size = (30 + example_id, 40)
      Image.new('RGB', size, id_color(example_id)).save(folder / f'{example_id:03d}.png')
  return root


def id_config(root: str, **overrides) -> ml_collections.ConfigDict:
  """Geometry only (no RandAugment), so constant-colour images stay readable."""
  overrides.setdefault('randaugment_num_ops', 0)
  return make_config(dataset='folder', data_dir=root, **overrides)
