"""A truncated JPEG: training skips, counts and names it; evaluation stops and names it."""
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


def test_training_skips_counts_and_names_it(folder_with_truncated_jpeg, caplog):
  config = data_testing.id_config(str(folder_with_truncated_jpeg), batch_size=4)
  batches = iterators.TrainIterator(config, process_index=0, process_count=1)
  with caplog.at_level(logging.WARNING):
    out = [next(batches) for _ in range(10)]  # 40 of 12 good images: into the 4th epoch
  assert all(batch['image'].shape == (4, 32, 32, 3) for batch in out)
  ids = [data_testing.decode_id(image) for batch in out for image in batch['image']]
  assert sorted(ids[:12]) == list(range(12))  # the first epoch has every good image
  assert 3 <= batches.num_skipped <= 4
  assert batches.get_state()['num_skipped'] == batches.num_skipped
  assert str(folder_with_truncated_jpeg / 'train' / 'ant' / 'truncated.jpg') in caplog.text


def test_resume_is_exact_across_skipped_images(folder_with_truncated_jpeg):
  config = data_testing.id_config(str(folder_with_truncated_jpeg), batch_size=5)
  run = iterators.TrainIterator(config, process_index=0, process_count=1)
  for _ in range(3):
    next(run)
  state = run.get_state()
  expected = [next(run)['image'] for _ in range(5)]
  resumed = iterators.TrainIterator(config, process_index=0, process_count=1)
  resumed.set_state(state)
  for want in expected:
    np.testing.assert_array_equal(next(resumed)['image'], want)
  assert resumed.num_skipped == run.num_skipped >= 2


def test_evaluation_stops_with_the_file_name(folder_with_truncated_jpeg):
  config = data_testing.id_config(str(folder_with_truncated_jpeg), batch_size=2)
  with pytest.raises(iterators.CorruptImageError) as error:
    list(iterators.EvalIterator(config, process_index=0, process_count=1))
  assert str(folder_with_truncated_jpeg / 'val' / 'ant' / 'truncated.jpg') in str(error.value)
