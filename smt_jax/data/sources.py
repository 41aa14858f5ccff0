"""Where examples come from: a prepared TFDS dataset by name, or an image-folder tree.

`config.dataset` is a TFDS name (e.g. 'imagenet2012', read from `config.data_dir`) or
'folder' (an ImageFolder tree `config.data_dir/<split>/<class>/<image>`, listed by
`tfds.ImageFolder`; class ids follow the sorted class-folder names).

A source gives the pipeline, for one split and one process, undecoded records
{'image', 'label'} in a fixed order. Processes take contiguous, disjoint ranges of the split
that together cover it (the arithmetic of `tfds.even_splits`); ranges are explicit so that
an example's absolute index names it when its image cannot be decoded. For TFDS a record's
'image' holds the encoded bytes; for folders it holds the file path, read only after
shuffling and resume-skipping (`Source.load`), so skipping costs no file reads.

A dataset that is not there raises `DatasetNotFoundError` at once, naming the dataset, the
directory searched and the command that prepares it.
"""
import dataclasses
import functools
import os
from typing import List, Optional, Tuple

import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

FOLDER = 'folder'
TRAIN_SPLIT = 'train'
EVAL_SPLITS = ('validation', 'val', 'test')  # the first one present is evaluated


class DatasetNotFoundError(Exception):
  """The configured dataset is not where the config says; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the training loop needs to know about the configured dataset."""
  name: str
  num_classes: int
  train_split: str
  eval_split: Optional[str]  # None when the dataset has no evaluation split
  num_train_examples: int
  num_eval_examples: int


def process_range(num_examples: int, process_index: int,
                  process_count: int) -> Tuple[int, int]:
  """[start, stop) of this process: the first `num_examples % process_count` take one more."""
  base, extra = divmod(num_examples, process_count)
  start = process_index * base + min(process_index, extra)
  return start, start + base + (process_index < extra)


def _pick_splits(name: str, splits: List[str], where: str) -> Tuple[str, Optional[str]]:
  if TRAIN_SPLIT not in splits:
    raise DatasetNotFoundError(
        f"Dataset '{name}' in {where} has no '{TRAIN_SPLIT}' split (it has {sorted(splits)}).")
  eval_split = next((s for s in EVAL_SPLITS if s in splits), None)
  return TRAIN_SPLIT, eval_split


def _empty_records() -> tf.data.Dataset:
  return tf.data.Dataset.from_tensor_slices(
      {'image': tf.constant([], tf.string), 'label': tf.constant([], tf.int64)})


class TfdsSource:
  """A prepared TFDS dataset with `image` and `label` features."""

  lazy_records = False  # records carry the image bytes

  def __init__(self, name: str, data_dir: Optional[str]):
    try:
      self.builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
      raise DatasetNotFoundError(
          f"'{name}' is not a TFDS dataset name, and no prepared dataset of that name is in "
          f"data_dir {data_dir!r}. For a tree of class sub-folders set config.dataset="
          f"'{FOLDER}' and config.data_dir to its root.") from None
    if not self.builder.is_prepared():
      raise DatasetNotFoundError(self._not_prepared_message(name, data_dir))
    features = self.builder.info.features
    if not {'image', 'label'} <= set(features.keys()):
      raise DatasetNotFoundError(
          f"TFDS dataset '{name}' has features {sorted(features.keys())}; the pipeline needs "
          "'image' and 'label'.")
    train, evaluation = _pick_splits(name, list(self.builder.info.splits.keys()),
                                     f"data_dir '{os.fspath(self.builder.data_dir_root)}'")
    splits = self.builder.info.splits
    self.info = DatasetInfo(
        name=name, num_classes=features['label'].num_classes, train_split=train,
        eval_split=evaluation, num_train_examples=splits[train].num_examples,
        num_eval_examples=splits[evaluation].num_examples if evaluation else 0)

  def _not_prepared_message(self, name: str, data_dir: Optional[str]) -> str:
    manual = ''
    if self.builder.MANUAL_DOWNLOAD_INSTRUCTIONS:
      manual = ' --manual_dir=DIR_WITH_THE_DOWNLOADED_FILES'
      if name.startswith('imagenet2012'):
        manual = ' --manual_dir=DIR_WITH_ILSVRC2012_img_train.tar_AND_ILSVRC2012_img_val.tar'
    root = os.fspath(self.builder.data_dir_root)
    return (
        f"Dataset '{name}' is not prepared in data_dir '{root}' (searched "
        f"'{os.fspath(self.builder.data_dir)}'). Prepare it once with\n"
        f"  tfds build {name}{manual} --data_dir={data_dir or root}\n"
        "(docs/data.md, 'Preparing ImageNet'), or set config.data_dir to where it was prepared.")

  def _as_dataset(self, split: str, add_id: bool = False) -> tf.data.Dataset:
    return self.builder.as_dataset(
        split=split, shuffle_files=False,
        decoders={'image': tfds.decode.SkipDecoding()},
        read_config=tfds.ReadConfig(try_autocache=False, add_tfds_id=add_id))

  def records(self, split: str, start: int, stop: int) -> tf.data.Dataset:
    """Records [start, stop) of `split`, in the dataset's stored order."""
    if start == stop:
      return _empty_records()
    return self._as_dataset(f'{split}[{start}:{stop}]').map(
        lambda ex: {'image': ex['image'], 'label': ex['label']})

  def load(self, image: tf.Tensor) -> tf.Tensor:
    return image

  def _example(self, split: str, index: int):
    return next(iter(self._as_dataset(f'{split}[{index}:{index + 1}]', add_id=True)))

  def name(self, split: str, index: int) -> str:
    """A name of example `index` of `split` for messages: its file name, else its TFDS id."""
    ex = self._example(split, index)
    return (ex['file_name'] if 'file_name' in ex else ex['tfds_id']).numpy().decode()

  def read(self, split: str, index: int) -> bytes:
    """The encoded image of example `index` of `split`."""
    return self._example(split, index)['image'].numpy()


class FolderSource:
  """An ImageFolder tree: `root/<split>/<class>/<image>.{jpg,jpeg,png}`."""

  lazy_records = True  # records carry file paths, read after shuffling

  def __init__(self, root: Optional[str]):
    if not root or not tf.io.gfile.isdir(root):
      raise DatasetNotFoundError(
          f"Image folder {root!r} (config.data_dir) does not exist. With config.dataset="
          f"'{FOLDER}', config.data_dir must be the root of a tree "
          "ROOT/train/<class>/<image>.jpg (and ROOT/val/<class>/... for evaluation).")
    builder = tfds.ImageFolder(root)
    # ImageFolder lists the files once, in a fixed (seeded) order, with their class names;
    # reading that list rather than its dataset keeps file reads after the shuffle.
    self._examples = builder._split_examples  # pylint: disable=protected-access
    self._label_names = builder.info.features['label']
    train, evaluation = _pick_splits(root, list(self._examples), 'the image folder')
    self.info = DatasetInfo(
        name=FOLDER, num_classes=self._label_names.num_classes, train_split=train,
        eval_split=evaluation, num_train_examples=len(self._examples[train]),
        num_eval_examples=len(self._examples[evaluation]) if evaluation else 0)

  def records(self, split: str, start: int, stop: int) -> tf.data.Dataset:
    examples = self._examples[split][start:stop]
    if not examples:
      return _empty_records()
    return tf.data.Dataset.from_tensor_slices({
        'image': [os.fspath(ex.image_path) for ex in examples],
        'label': tf.constant([self._label_names.str2int(ex.label) for ex in examples],
                             tf.int64)})

  def load(self, image: tf.Tensor) -> tf.Tensor:
    return tf.io.read_file(image)

  def name(self, split: str, index: int) -> str:
    return os.fspath(self._examples[split][index].image_path)

  def read(self, split: str, index: int) -> bytes:
    with tf.io.gfile.GFile(self.name(split, index), 'rb') as f:
      return f.read()


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
