"""ADE20K (SceneParsing / ADEChallengeData2016, 150 classes) as a TFDS builder.

The benchmark of the official SMT segmentation results (mmseg `ADE20KDataset`): 20,210
training and 2,000 validation images, each with an 8-bit label PNG in which 0 is "other"
(not scored) and 1..150 are the classes. TFDS's own `scene_parse150` is a different
release of the annotations, hence this builder, named `ade20k`.

It is prepared from the official `ADEChallengeData2016.zip` in the manual folder, read
in place (nothing is extracted). Build it, in ArrayRecord for random access:

    python -m smt_jax.tools.build_ade20k --manual_dir=DIR_WITH_ZIP --data_dir=TFDS_DATA_DIR

and read it with `tfds.data_source('ade20k', data_dir=TFDS_DATA_DIR)` after importing
this module (the import registers the builder).

Features:
  image: the JPEG bytes exactly as in the zip (decode with PIL or the feature; no
    re-encoding, so no second JPEG loss).
  segmentation: uint8 [H, W, 1] PNG, with mmseg's `reduce_zero_label` applied here, at
    build time: 0 -> 255 (`IGNORE_INDEX`), k -> k - 1. The stored labels are then the
    training targets as they are, so no reader can forget the shift, and PNG being
    lossless, the raw annotation is still `(label + 1) % 256`.
  file_name: e.g. `ADE_train_00000001.jpg`.

Class names, in target order 0..149, are `CLASS_NAMES` (mmseg's ADE20KDataset CLASSES;
mmseg spells the eighth `'bed '` with a trailing space, here `'bed'`).
"""
import importlib.resources
import io
import zipfile
from typing import List

from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

ZIP_NAME = 'ADEChallengeData2016.zip'
IGNORE_INDEX = 255
NUM_CLASSES = 150
_SPLITS = {'train': 'training', 'validation': 'validation'}


def class_names() -> List[str]:
  """The 150 class names in target order (label k is class k + 1 of the raw PNGs)."""
  text = (importlib.resources.files('smt_jax') / 'data' / 'ade20k_classes.txt').read_text()
  return text.splitlines()


CLASS_NAMES = class_names()


def reduce_zero_label(raw: np.ndarray) -> np.ndarray:
  """mmseg's reduce_zero_label on a uint8 annotation: 0 -> 255, k -> k - 1."""
  return (raw.astype(np.int32) - 1).astype(np.uint8)  # 0 - 1 wraps to 255


def zip_path(manual_dir) -> epath.Path:
  """manual_dir/ADEChallengeData2016.zip, or an error naming the file and the folder."""
  path = epath.Path(manual_dir) / ZIP_NAME
  if not path.exists():
    raise FileNotFoundError(
        f'{ZIP_NAME} not found in the manual folder {manual_dir}. Download it from '
        f'http://sceneparsing.csail.mit.edu/ and put it there unextracted, or pass the '
        f'folder that holds it: python -m smt_jax.tools.build_ade20k --manual_dir=DIR '
        f'--data_dir=DIR')
  return path


class Ade20k(tfds.core.GeneratorBasedBuilder):
  """ADE20K scene parsing, 150 classes, from the official challenge zip."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'ADEChallengeData2016, labels reduced (0 -> 255, k -> k-1).'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
  Download {ZIP_NAME} (the official ADE20K release of the MIT Scene Parsing benchmark,
  http://sceneparsing.csail.mit.edu/) and put it, unextracted, in the manual folder.
  """

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description='ADE20K scene parsing (ADEChallengeData2016), 150 classes.',
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
            'segmentation': tfds.features.Image(shape=(None, None, 1), encoding_format='png'),
            'file_name': tfds.features.Text(),
        }),
        supervised_keys=('image', 'segmentation'),
        homepage='http://sceneparsing.csail.mit.edu/',
        metadata=tfds.core.MetadataDict(class_names=CLASS_NAMES, ignore_index=IGNORE_INDEX),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    path = zip_path(dl_manager.manual_dir)
    return {split: self._generate_examples(path, folder) for split, folder in _SPLITS.items()}

  def _generate_examples(self, path, folder: str):
    images = f'ADEChallengeData2016/images/{folder}/'
    annotations = f'ADEChallengeData2016/annotations/{folder}/'
    with zipfile.ZipFile(path.open('rb')) as archive:
      names = sorted(n for n in archive.namelist()
                     if n.startswith(images) and n.endswith('.jpg'))
      if not names:
        raise ValueError(f'{path} has no {images}*.jpg: not the official {ZIP_NAME}?')
      for name in names:
        file_name = name[len(images):]
        png = annotations + file_name[:-len('.jpg')] + '.png'
        try:
          raw = np.asarray(Image.open(io.BytesIO(archive.read(png))))
        except KeyError:
          raise ValueError(f'{path} has no annotation {png} for {name}.') from None
        if raw.ndim != 2 or raw.dtype != np.uint8 or raw.max() > NUM_CLASSES:
          raise ValueError(f'{path}:{png}: expected an 8-bit single-channel PNG with '
                           f'values 0..{NUM_CLASSES}, got {raw.dtype} {raw.shape} '
                           f'max {raw.max()}.')
        encoded = io.BytesIO()
        Image.fromarray(reduce_zero_label(raw)).save(encoded, format='PNG')
        yield file_name, {
            'image': archive.read(name),
            'segmentation': encoded.getvalue(),
            'file_name': file_name,
        }


def build(manual_dir: str, data_dir: str) -> Ade20k:
  """Prepares ade20k in ArrayRecord (random access) from manual_dir/ADEChallengeData2016.zip."""
  zip_path(manual_dir)  # before TFDS, whose own check names no file
  builder = Ade20k(data_dir=data_dir)
  builder.download_and_prepare(
      file_format='array_record',
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
  return builder
