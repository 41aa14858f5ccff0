"""Sources: the real imagenet2012 builder, TFDS by name (mocked), image folders, errors."""
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds

from . import data_testing
from smt_jax.data import sources


@pytest.mark.parametrize('num_examples', [0, 1, 7, 50_000])
@pytest.mark.parametrize('process_count', [1, 3, 8])
def test_process_ranges_are_disjoint_and_complete(num_examples, process_count):
  ranges = [sources.process_range(num_examples, i, process_count)
            for i in range(process_count)]
  covered = np.concatenate([np.arange(start, stop) for start, stop in ranges])
  np.testing.assert_array_equal(covered, np.arange(num_examples))
  sizes = [stop - start for start, stop in ranges]
  assert max(sizes) - min(sizes) <= 1


def test_imagenet2012_prepared_by_the_real_builder(imagenet_data_dir):
  config = data_testing.make_config(dataset='imagenet2012', data_dir=imagenet_data_dir)
  info = sources.dataset_info(config)
  assert info == sources.DatasetInfo(
      name='imagenet2012', num_classes=1000, train_split='train', eval_split='validation',
      num_train_examples=12, num_eval_examples=data_testing.NUM_VAL)

  source = sources.get_source(config)
  labels = [int(r['label']) for r in source.records('train', 0, 12)]
  assert sorted(labels) == [0] * 4 + [1] * 4 + [2] * 4  # synsets in labels.txt order
  # Validation labels come from the list TFDS ships, in sorted file-name order.
  label_names = tfds.builder('imagenet2012', data_dir=imagenet_data_dir).info.features['label']
  with open(tfds.core.tfds_path('datasets/imagenet2012/validation_labels.txt')) as f:
    expected = [label_names.str2int(s) for s in f.read().split()[:data_testing.NUM_VAL]]
  names = [source.name('validation', i) for i in range(data_testing.NUM_VAL)]
  by_name = dict(zip(names, [int(r['label']) for r in source.records('validation', 0, 10)]))
  assert [by_name[f'ILSVRC2012_val_{i:08d}.JPEG'] for i in range(1, 11)] == expected


def test_any_tfds_dataset_by_name_with_mock_data(tmp_path):
  # Split sizes come from metadata written for the mock; images are generated PNGs.
  builder = tfds.builder('cifar10', data_dir=str(tmp_path))
  os.makedirs(builder.data_dir)
  builder.info.set_splits(tfds.core.SplitDict([
      tfds.core.SplitInfo(name='train', shard_lengths=[6], num_bytes=0),
      tfds.core.SplitInfo(name='test', shard_lengths=[6], num_bytes=0)]))
  builder.info.write_to_directory(builder.data_dir)
  config = data_testing.make_config(dataset='cifar10', data_dir=str(tmp_path))
  with tfds.testing.mock_data(num_examples=6, data_dir=str(tmp_path)):
    info = sources.dataset_info(config)
    assert (info.num_classes, info.eval_split, info.num_train_examples) == (10, 'test', 6)
    records = list(sources.get_source(config).records('train', 0, 6))
  assert len(records) == 6
  assert all(r['image'].numpy().startswith(b'\x89PNG') for r in records)


def test_image_folder(id_folder):
  config = data_testing.id_config(id_folder)
  info = sources.dataset_info(config)
  assert (info.num_classes, info.train_split, info.eval_split) == (3, 'train', 'val')
  assert (info.num_train_examples, info.num_eval_examples) == (13, 10)
  source = sources.get_source(config)
  for r in source.records('train', 0, 13):
    path = r['image'].numpy().decode()
    class_name = path.split('/')[-2]
    assert int(r['label']) == data_testing.ID_FOLDER_CLASSES.index(class_name)


def test_missing_imagenet_says_what_and_how(tmp_path):
  config = data_testing.make_config(dataset='imagenet2012', data_dir=str(tmp_path))
  with pytest.raises(sources.DatasetNotFoundError) as error:
    sources.get_source(config)
  message = str(error.value)
  assert "'imagenet2012'" in message
  assert str(tmp_path) in message
  assert 'tfds build imagenet2012 --manual_dir=' in message
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
