"""A truncated JPEG: training replaces, counts and names it; evaluation stops and names it."""
import logging

import numpy as np
import pytest

from . import data_testing
from smt_jax.data import iterators


@pytest.fixture
def folder_with_truncated_jpeg(tmp_path):
  root = data_testing.write_id_folder(tmp_path, {'train': 12, 'val': 5})
  rng = np.random.default_rng(0)
  for split in ('train', 'val'):
    corrupt = root / split / 'ant' / 'truncated.jpg'
    corrupt.write_bytes(data_testing.jpeg_bytes(rng, 32, 32)[:300])
  return root


def test_training_replaces_counts_and_names_it(folder_with_truncated_jpeg, caplog):
  config = data_testing.id_config(str(folder_with_truncated_jpeg), batch_size=13)
  batches = iterators.TrainIterator(config, process_index=0, process_count=1)
  with caplog.at_level(logging.WARNING):
    out = [next(batches) for _ in range(3)]  # three epochs of 13 files, one corrupt
  assert all(batch['image'].shape == (13, 32, 32, 3) for batch in out)
  for batch in out:  # every good image; the next one of the order took the bad one's row
    ids = [data_testing.decode_id(image) for image in batch['image']]
    assert set(ids) == set(range(12)) and len(ids) == 13
  assert batches.num_skipped == 3
  assert str(folder_with_truncated_jpeg / 'train' / 'ant' / 'truncated.jpg') in caplog.text
  batches.close()


def test_resume_is_exact_across_replaced_images(folder_with_truncated_jpeg):
  config = data_testing.id_config(str(folder_with_truncated_jpeg), batch_size=5)
  run = iterators.TrainIterator(config, process_index=0, process_count=1)
  expected = [next(run)['image'] for _ in range(8)][3:]
  resumed = iterators.TrainIterator(config, start_step=3, process_index=0, process_count=1)
  for want in expected:
    np.testing.assert_array_equal(next(resumed)['image'], want)
  assert run.num_skipped >= 2 and resumed.num_skipped >= 1


def test_evaluation_stops_with_the_file_name(folder_with_truncated_jpeg):
  config = data_testing.id_config(str(folder_with_truncated_jpeg), batch_size=2)
  with pytest.raises(iterators.CorruptImageError) as error:
    list(iterators.EvalIterator(config, process_index=0, process_count=1))
  assert str(folder_with_truncated_jpeg / 'val' / 'ant' / 'truncated.jpg') in str(error.value)
