"""Sources: the real imagenet2012 builder, TFDS by name, ArrayRecord only, image folders, errors."""
import shlex

import numpy as np
import pytest
import tensorflow_datasets as tfds

from . import data_testing
from smt_jax.data import sources


def test_imagenet2012_prepared_by_the_real_builder(imagenet_data_dir):
  config = data_testing.make_config(dataset='imagenet2012', data_dir=imagenet_data_dir)
  info = sources.dataset_info(config)
  assert info == sources.DatasetInfo(
      name='imagenet2012', task='classification', num_classes=1000, train_split='train',
      eval_split='validation',
      num_train_examples=12, num_eval_examples=data_testing.NUM_VAL)

  source = sources.get_source(config)
  labels = [source.example('train', i)[1] for i in range(12)]
  assert sorted(labels) == [0] * 4 + [1] * 4 + [2] * 4  # synsets in labels.txt order
  # Validation labels come from the list TFDS ships, in sorted file-name order.
  label_names = tfds.builder('imagenet2012', data_dir=imagenet_data_dir).info.features['label']
  with open(tfds.core.tfds_path('datasets/imagenet2012/validation_labels.txt')) as f:
    expected = [label_names.str2int(s) for s in f.read().split()[:data_testing.NUM_VAL]]
  names = [source.name('validation', i) for i in range(data_testing.NUM_VAL)]
  by_name = dict(zip(names, [source.example('validation', i)[1] for i in range(10)]))
  assert [by_name[f'ILSVRC2012_val_{i:08d}.JPEG'] for i in range(1, 11)] == expected


def _store(name, data_dir, file_format):
  """A small TFDS dataset with JPEG images and 4 classes, written by TFDS itself."""
  rng = np.random.default_rng(0)
  examples = [(i, {'image': rng.integers(0, 256, (20, 24, 3), dtype=np.uint8),
                   'label': i % 4}) for i in range(6)]
  tfds.dataset_builders.store_as_tfds_dataset(
      name=name, version='1.0.0', data_dir=data_dir, file_format=file_format,
      features=tfds.features.FeaturesDict({
          'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
          'label': tfds.features.ClassLabel(num_classes=4)}),
      split_datasets={'train': examples[:4], 'test': examples[4:]})


def test_any_tfds_dataset_by_name(tmp_path):
  _store('smt_test_any', str(tmp_path), 'array_record')
  config = data_testing.make_config(dataset='smt_test_any', data_dir=str(tmp_path))
  info = sources.dataset_info(config)
  assert (info.num_classes, info.eval_split, info.num_train_examples) == (4, 'test', 4)
  source = sources.get_source(config)
  image, label = source.example('test', 1)
  assert image.startswith(b'\xff\xd8') and label == 1  # the encoded JPEG, undecoded


def test_a_tfrecord_build_names_the_command_that_converts_it(tmp_path):
  _store('smt_test_tfrecord', str(tmp_path), 'tfrecord')
  config = data_testing.make_config(dataset='smt_test_tfrecord', data_dir=str(tmp_path))
  with pytest.raises(sources.DatasetNotFoundError) as error:
    sources.get_source(config)
  command = next(line.strip() for line in str(error.value).splitlines()
                 if line.strip().startswith('tfds convert_format'))
  assert shlex.split(command)[2:] == [
      f'--dataset_version_dir={tmp_path / "smt_test_tfrecord" / "1.0.0"}',
      '--out_file_format=array_record']
  assert 'tfds build smt_test_tfrecord --file_format=array_record' in str(error.value)


def test_image_folder(id_folder):
  config = data_testing.id_config(id_folder)
  info = sources.dataset_info(config)
  assert (info.num_classes, info.train_split, info.eval_split) == (3, 'train', 'val')
  assert (info.num_train_examples, info.num_eval_examples) == (13, 10)
  source = sources.get_source(config)
  for index in range(13):
    image, label = source.example('train', index)
    path = source.name('train', index)
    assert image == open(path, 'rb').read()
    assert label == data_testing.ID_FOLDER_CLASSES.index(path.split('/')[-2])


def test_missing_imagenet_says_what_and_how(tmp_path):
  config = data_testing.make_config(dataset='imagenet2012', data_dir=str(tmp_path))
  with pytest.raises(sources.DatasetNotFoundError) as error:
    sources.get_source(config)
  message = str(error.value)
  assert "'imagenet2012'" in message
  assert str(tmp_path) in message
  assert 'tfds build imagenet2012 --manual_dir=' in message
  assert '--file_format=array_record' in message
  assert f'--data_dir={tmp_path}' in message
  assert error.value.__cause__ is None and error.value.__suppress_context__ is False


def test_unknown_name_and_missing_folder(tmp_path):
  with pytest.raises(sources.DatasetNotFoundError, match="'no_such_dataset' is not a TFDS"):
    sources.get_source(data_testing.make_config(dataset='no_such_dataset',
                                                data_dir=str(tmp_path)))
  missing = str(tmp_path / 'nowhere')
  with pytest.raises(sources.DatasetNotFoundError, match='does not exist') as error:
    sources.get_source(data_testing.make_config(dataset='folder', data_dir=missing))
  assert missing in str(error.value)
  (tmp_path / 'val' / 'a').mkdir(parents=True)
  with pytest.raises(sources.DatasetNotFoundError, match="no 'train' split"):
    sources.get_source(data_testing.make_config(dataset='folder', data_dir=str(tmp_path)))
