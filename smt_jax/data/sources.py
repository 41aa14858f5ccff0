"""Where examples come from: random-access sources of (encoded image, target) by index.

`config.dataset` is a TFDS name (e.g. 'imagenet2012', prepared in the ArrayRecord format in
`config.data_dir`) or 'folder' (an image-folder tree `config.data_dir/<split>/<class>/<image>`;
class ids follow the sorted class-folder names, files are taken in sorted order).

A source reads any example of a split by its index, in O(1): `example(split, index)` gives
the encoded image bytes and the target, undecoded, so the pipeline decides what and how much
to decode. The target is a class id (classification: a TFDS `label` feature, or the folder)
or the encoded label map (segmentation: a TFDS `segmentation` image feature, as in the
`ade20k` and `seg_shapes` builders of this package, whose class names come from the
dataset's metadata). TFDS datasets are read through `tfds.data_source`, which needs the ArrayRecord
format; a TFRecord build raises `DatasetNotFoundError` naming the `tfds convert_format`
command that converts it in place.

A dataset that is not there raises `DatasetNotFoundError` at once, naming the dataset, the
directory searched and the command that prepares it.
"""
import dataclasses
import functools
import os
from typing import Dict, List, Optional, Tuple, Union

from etils import epath
import ml_collections
import tensorflow_datasets as tfds

from smt_jax.data import ade20k  # pylint: disable=unused-import (registers the builder)
from smt_jax.data import shapes  # pylint: disable=unused-import (registers the builder)

CLASSIFICATION = 'classification'
SEGMENTATION = 'segmentation'
FOLDER = 'folder'
TRAIN_SPLIT = 'train'
EVAL_SPLITS = ('validation', 'val', 'test')  # the first one present is evaluated
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')


class DatasetNotFoundError(Exception):
  """The configured dataset is not where the config says; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the training loop needs to know about the configured dataset."""
  name: str
  task: str  # CLASSIFICATION or SEGMENTATION: what the examples' targets are
  num_classes: int
  train_split: str
  eval_split: Optional[str]  # None when the dataset has no evaluation split
  num_train_examples: int
  num_eval_examples: int


def _pick_splits(name: str, splits: List[str], where: str) -> Tuple[str, Optional[str]]:
  if TRAIN_SPLIT not in splits:
    raise DatasetNotFoundError(
        f"Dataset '{name}' in {where} has no '{TRAIN_SPLIT}' split (it has {sorted(splits)}).")
  eval_split = next((s for s in EVAL_SPLITS if s in splits), None)
  return TRAIN_SPLIT, eval_split


class TfdsSource:
  """A TFDS dataset with an `image` and a `label` or `segmentation` feature, prepared in the
  ArrayRecord format."""

  def __init__(self, name: str, data_dir: Optional[str]):
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
      raise DatasetNotFoundError(
          f"'{name}' is not a TFDS dataset name, and no prepared dataset of that name is in "
          f"data_dir {data_dir!r}. For a tree of class sub-folders set config.dataset="
          f"'{FOLDER}' and config.data_dir to its root.") from None
    if not builder.is_prepared():
      raise DatasetNotFoundError(_not_prepared_message(builder, name, data_dir))
    features = builder.info.features
    target = next((t for t in ('label', 'segmentation') if t in features), None)
    if 'image' not in features or target is None:
      raise DatasetNotFoundError(
          f"TFDS dataset '{name}' has features {sorted(features.keys())}; the pipeline needs "
          "'image' and 'label' (classification) or 'segmentation' (per-pixel labels).")
    if tfds.core.file_adapters.FileFormat.ARRAY_RECORD not in _file_formats(builder.info):
      raise DatasetNotFoundError(
          f"Dataset '{name}' in '{os.fspath(builder.data_dir)}' is prepared as "
          f"{builder.info.file_format.value}; training reads examples by index, which needs "
          'the ArrayRecord format. Convert it once, in place (the command needs apache-beam '
          'installed), with\n'
          f'  tfds convert_format --dataset_version_dir={os.fspath(builder.data_dir)} '
          '--out_file_format=array_record\n'
          f'or prepare it again with `tfds build {name} --file_format=array_record` '
          "(docs/data.md, 'Preparing ImageNet').")
    train, evaluation = _pick_splits(name, list(builder.info.splits.keys()),
                                     f"data_dir '{os.fspath(builder.data_dir_root)}'")
    splits = builder.info.splits
    if target == 'label':
      task, num_classes = CLASSIFICATION, features['label'].num_classes
    else:
      task, num_classes = SEGMENTATION, len(builder.info.metadata['class_names'])
    self.info = DatasetInfo(
        name=name, task=task, num_classes=num_classes, train_split=train,
        eval_split=evaluation, num_train_examples=splits[train].num_examples,
        num_eval_examples=splits[evaluation].num_examples if evaluation else 0)
    self._name, self._data_dir, self._target = name, data_dir, target
    self._has_file_name = 'file_name' in features
    self._readers: Dict[str, object] = {}

  def _reader(self, split: str):
    if split not in self._readers:  # opened on first use: in the process that reads
      self._readers[split] = tfds.data_source(
          self._name, split=split, data_dir=self._data_dir, download=False,
          decoders={'image': tfds.decode.SkipDecoding(),
                    self._target: tfds.decode.SkipDecoding()})
    return self._readers[split]

  def __getstate__(self):  # open readers are per process: pickled sources reopen them
    return dict(self.__dict__, _readers={})

  def example(self, split: str, index: int) -> Tuple[bytes, Union[int, bytes]]:
    """(encoded image, class id or encoded label map) of example `index` of `split`."""
    record = self._reader(split)[index]
    target = record[self._target]
    return record['image'], int(target) if self._target == 'label' else target

  def name(self, split: str, index: int) -> str:
    """A name of example `index` for messages: its file name if the dataset keeps one."""
    if self._has_file_name:
      file_name = self._reader(split)[index]['file_name']
      return file_name.decode() if isinstance(file_name, bytes) else str(file_name)
    return f'{self._name}/{split}[{index}]'


def _file_formats(info) -> List:
  return [info.file_format, *getattr(info, 'alternative_file_formats', [])]


def _not_prepared_message(builder, name: str, data_dir: Optional[str]) -> str:
  manual = ''
  if builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
    manual = ' --manual_dir=DIR_WITH_THE_DOWNLOADED_FILES'
    if name.startswith('imagenet2012'):
      manual = ' --manual_dir=DIR_WITH_ILSVRC2012_img_train.tar_AND_ILSVRC2012_img_val.tar'
  root = os.fspath(builder.data_dir_root)
  return (
      f"Dataset '{name}' is not prepared in data_dir '{root}' (searched "
      f"'{os.fspath(builder.data_dir)}'). Prepare it once with\n"
      f"  tfds build {name}{manual} --file_format=array_record --data_dir={data_dir or root}\n"
      "(docs/data.md, 'Preparing ImageNet'), or set config.data_dir to where it was prepared.")


class FolderSource:
  """An image-folder tree: `root/<split>/<class>/<image>.{jpg,jpeg,png,bmp,gif}`."""

  def __init__(self, root: Optional[str]):
    if not root or not epath.Path(root).is_dir():
      raise DatasetNotFoundError(
          f"Image folder {root!r} (config.data_dir) does not exist. With config.dataset="
          f"'{FOLDER}', config.data_dir must be the root of a tree "
          "ROOT/train/<class>/<image>.jpg (and ROOT/val/<class>/... for evaluation).")
    self._root = epath.Path(root)
    splits = sorted(p.name for p in self._root.iterdir() if p.is_dir())
    train, evaluation = _pick_splits(root, splits, 'the image folder')
    self._classes = sorted(p.name for p in (self._root / train).iterdir() if p.is_dir())
    self._files = {s: self._list(s, train) for s in (train, evaluation) if s}
    self.info = DatasetInfo(
        name=FOLDER, task=CLASSIFICATION, num_classes=len(self._classes), train_split=train,
        eval_split=evaluation, num_train_examples=len(self._files[train]),
        num_eval_examples=len(self._files[evaluation]) if evaluation else 0)

  def _list(self, split: str, train: str) -> List[Tuple[str, int]]:
    """(path relative to the split, label) of every image, sorted by class then file."""
    ids = {name: i for i, name in enumerate(self._classes)}
    files = []
    for folder in sorted(p for p in (self._root / split).iterdir() if p.is_dir()):
      if folder.name not in ids:
        raise DatasetNotFoundError(
            f"Class folder '{folder}' has no counterpart in '{self._root / train}'; "
            'every split must use the training classes.')
      files.extend((f'{folder.name}/{f.name}', ids[folder.name])
                   for f in sorted(folder.iterdir())
                   if f.suffix.lower() in IMAGE_EXTENSIONS)
    return files

  def example(self, split: str, index: int) -> Tuple[bytes, int]:
    path, label = self._files[split][index]
    return (self._root / split / path).read_bytes(), label

  def name(self, split: str, index: int) -> str:
    return os.fspath(self._root / split / self._files[split][index][0])


@functools.lru_cache(maxsize=8)
def _cached_source(dataset: str, data_dir: Optional[str]):
  if dataset == FOLDER:
    return FolderSource(data_dir)
  return TfdsSource(dataset, data_dir)


def get_source(config: ml_collections.ConfigDict):
  """The source named by `config.dataset` and `config.data_dir`.

  Sources are cached per process: listing a large image folder takes a while, and the
  dataset info, training and evaluation iterators all need it.
  """
  return _cached_source(config.dataset, config.data_dir or None)  # '': TFDS's default


def dataset_info(config: ml_collections.ConfigDict) -> DatasetInfo:
  """Number of classes, split names and sizes of the configured dataset."""
  return get_source(config).info
