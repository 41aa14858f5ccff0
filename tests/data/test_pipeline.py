"""Training and evaluation iterators: batches, determinism, sharding, padding, resume."""
import json

import numpy as np
import pytest

from . import data_testing
from smt_jax.data import iterators


def _ids(batch):
  return [data_testing.decode_id(image) for image in batch['image']]


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def test_train_batches_on_imagenet2012(imagenet_data_dir):
  config = data_testing.make_config(dataset='imagenet2012', data_dir=imagenet_data_dir)
  batches = iterators.TrainIterator(config, process_index=0, process_count=1)
  assert batches.info.num_classes == 1000
  for batch in _take(batches, 4):  # 16 examples: more than one epoch of 12
    assert set(batch) == {'image', 'label'}
    assert batch['image'].shape == (4, 32, 32, 3) and batch['image'].dtype == np.uint8
    assert batch['label'].shape == (4,) and batch['label'].dtype == np.int32
    assert set(batch['label']) <= {0, 1, 2}
  assert batch['image'].std() > 10  # real pixels, not padding


def test_same_seed_same_batches(imagenet_data_dir):
  config = data_testing.make_config(dataset='imagenet2012', data_dir=imagenet_data_dir)
  first = _take(iterators.TrainIterator(config, process_index=0, process_count=1), 4)
  second = _take(iterators.TrainIterator(config, process_index=0, process_count=1), 4)
  for a, b in zip(first, second):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  config.seed = 1
  other = _take(iterators.TrainIterator(config, process_index=0, process_count=1), 1)
  assert not np.array_equal(other[0]['image'], first[0]['image'])


def test_processes_train_on_disjoint_complete_parts(id_folder):
  # Batch 3 over 3 processes: one example per process and step.
  config = data_testing.id_config(id_folder, batch_size=3)
  seen = []
  for process in range(3):
    batches = iterators.TrainIterator(config, process_index=process, process_count=3)
    epoch = [i for batch in _take(batches, batches._order.num_records) for i in _ids(batch)]
    assert len(set(epoch)) == len(epoch)  # an epoch visits each record once
    seen.extend(epoch)
  assert sorted(seen) == list(range(data_testing.ID_FOLDER_SPLITS['train']))


def test_epochs_are_reshuffled(id_folder):
  batches = iterators.TrainIterator(data_testing.id_config(id_folder, batch_size=13),
                                    process_index=0, process_count=1)
  first, second = (_ids(batch) for batch in _take(batches, 2))
  assert sorted(first) == sorted(second) == list(range(13)) and first != second


@pytest.mark.parametrize('batch_size,process_count', [(1, 1), (4, 1), (8, 1), (2, 2), (6, 3)])
def test_eval_sees_every_example_exactly_once(id_folder, batch_size, process_count):
  config = data_testing.id_config(id_folder, batch_size=batch_size)
  ids, lengths = [], set()
  for process in range(process_count):
    batches = iterators.EvalIterator(config, process_index=process,
                                     process_count=process_count)
    out = list(batches)
    assert len(out) == len(batches)
    lengths.add(len(out))
    for batch in out:
      assert batch['mask'].dtype == bool
      assert not batch['image'][~batch['mask']].any()
      ids.extend(np.array(_ids(batch))[batch['mask']])
  assert len(lengths) == 1  # every process runs the same number of steps
  assert sorted(ids) == list(range(data_testing.ID_FOLDER_SPLITS['val']))


def test_eval_on_imagenet2012_validation(imagenet_data_dir):
  config = data_testing.make_config(dataset='imagenet2012', data_dir=imagenet_data_dir)
  batches = list(iterators.EvalIterator(config, process_index=0, process_count=1))
  assert len(batches) == 3
  masks = np.concatenate([b['mask'] for b in batches])
  assert masks.sum() == data_testing.NUM_VAL and not masks[data_testing.NUM_VAL:].any()
  assert all(b['image'].shape == (4, 32, 32, 3) for b in batches)
  again = list(iterators.EvalIterator(config, process_index=0, process_count=1))
  for a, b in zip(batches, again):
    np.testing.assert_array_equal(a['image'], b['image'])


def test_resume_continues_exactly(id_folder):
  # Batch 5 over 13 examples: batches straddle epochs; resume inside the second epoch.
  config = data_testing.id_config(id_folder, batch_size=5)
  run = iterators.TrainIterator(config, process_index=0, process_count=1)
  _take(run, 4)
  state = json.loads(json.dumps(run.get_state()))
  assert (state['epoch'], state['position']) == (1, 7)
  expected = _take(run, 4)
  resumed = iterators.TrainIterator(config, process_index=0, process_count=1)
  resumed.set_state(state)
  for a, b in zip(expected, _take(resumed, 4)):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])


def test_resume_skips_without_reading(tmp_path):
  # Files before the resume point are overwritten with garbage: had the resumed iterator
  # read them, it would have skipped them as undecodable.
  root = data_testing.write_id_folder(tmp_path, {'train': 12})
  config = data_testing.id_config(str(root), batch_size=4)
  run = iterators.TrainIterator(config, process_index=0, process_count=1)
  consumed = [i for batch in _take(run, 2) for i in _ids(batch)]
  state = run.get_state()
  expected = _take(run, 1)[0]
  for path in root.glob('train/*/*.png'):
    if int(path.stem) in consumed:
      path.write_bytes(b'garbage')
  resumed = iterators.TrainIterator(config, process_index=0, process_count=1)
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)['image'], expected['image'])
  assert resumed.num_skipped == 0


def test_state_from_a_different_setup_is_refused(id_folder):
  config = data_testing.id_config(id_folder)
  state = iterators.TrainIterator(config, process_index=0, process_count=1).get_state()
  config.seed = 5
  with pytest.raises(ValueError, match=r'seed=\(0, 5\)'):
    iterators.TrainIterator(config, process_index=0, process_count=1).set_state(state)
  other = iterators.TrainIterator(data_testing.id_config(id_folder), process_index=1,
                                  process_count=2)
  with pytest.raises(ValueError, match='process_count'):
    other.set_state(state)
