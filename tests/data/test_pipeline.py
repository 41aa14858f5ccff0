"""Training and evaluation iterators: the stream, processes, padding, resume, workers."""
import numpy as np
import pytest

from . import data_testing
from smt_jax.data import iterators
from smt_jax.data import stream


def _ids(batch):
  return [data_testing.decode_id(image) for image in batch['image']]


def _take(iterator, n):
  return [next(iterator) for _ in range(n)]


def _global_batches(config, process_count, num_steps, start_step=0):
  """The global batches of `num_steps` steps, assembled from every process's rows."""
  per_process = [_take(iterators.TrainIterator(config, start_step=start_step, process_index=p,
                                               process_count=process_count), num_steps)
                 for p in range(process_count)]
  return [{k: np.concatenate([batches[step][k] for batches in per_process])
           for k in ('image', 'label')} for step in range(num_steps)]


@pytest.mark.parametrize('num_examples', [1, 2, 13, 1000, 100_003])
def test_each_epoch_is_a_permutation_and_epochs_differ(num_examples):
  order = stream.TrainStream(num_examples, seed=3)
  epochs = [[order.index(e, p) for p in range(num_examples)] for e in range(2)]
  for epoch in epochs:
    assert sorted(epoch) == list(range(num_examples))
  assert (epochs[0] != epochs[1]) == (num_examples > 2)
  assert epochs[0] == [stream.TrainStream(num_examples, seed=3).index(0, p)
                       for p in range(num_examples)]


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
  batches.close()


def test_same_seed_same_batches(imagenet_data_dir):
  config = data_testing.make_config(dataset='imagenet2012', data_dir=imagenet_data_dir)
  first = _global_batches(config, 1, 4)
  for a, b in zip(first, _global_batches(config, 1, 4)):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])
  config.seed = 1
  assert not np.array_equal(_global_batches(config, 1, 1)[0]['image'], first[0]['image'])


@pytest.mark.parametrize('process_count', [2, 4])
def test_global_batches_do_not_depend_on_the_process_count(imagenet_data_dir, process_count):
  # Full augmentation (crop, flip, RandAugment); 5 steps of 4 cross the epoch of 12.
  config = data_testing.make_config(dataset='imagenet2012', data_dir=imagenet_data_dir)
  for a, b in zip(_global_batches(config, 1, 5), _global_batches(config, process_count, 5)):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])


def test_every_example_once_per_epoch_across_processes(id_folder):
  # 13 examples, global batch 3 over 3 processes: epochs straddle batches.
  config = data_testing.id_config(id_folder, batch_size=3)
  ids = [i for batch in _global_batches(config, 3, 13) for i in _ids(batch)]
  epochs = [ids[:13], ids[13:26], ids[26:39]]
  for epoch in epochs:
    assert sorted(epoch) == list(range(13))
  assert epochs[0] != epochs[1] != epochs[2]


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


@pytest.mark.parametrize('saved_with,resumed_with', [(1, 1), (2, 1), (1, 4)])
def test_resume_from_the_step_on_any_process_count(imagenet_data_dir, saved_with,
                                                   resumed_with):
  # Batch 4 over 12 examples; resuming at step 4 is inside the second epoch.
  config = data_testing.make_config(dataset='imagenet2012', data_dir=imagenet_data_dir)
  expected = _global_batches(config, saved_with, 7)[4:]
  resumed = _global_batches(config, resumed_with, 3, start_step=4)
  for a, b in zip(expected, resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])


def test_resume_reads_nothing_before_the_step(tmp_path):
  # Files consumed before the resume point are overwritten with garbage: had the resumed
  # iterator read them, it would have had to skip them.
  root = data_testing.write_id_folder(tmp_path, {'train': 12})
  config = data_testing.id_config(str(root), batch_size=4)
  run = iterators.TrainIterator(config, process_index=0, process_count=1)
  consumed = [i for batch in _take(run, 2) for i in _ids(batch)]
  expected = next(run)
  for path in root.glob('train/*/*.png'):
    if int(path.stem) in consumed:
      path.write_bytes(b'garbage')
  resumed = iterators.TrainIterator(config, start_step=2, process_index=0, process_count=1)
  np.testing.assert_array_equal(next(resumed)['image'], expected['image'])
  assert resumed.num_skipped == 0


def test_worker_processes_give_the_same_batches(imagenet_data_dir):
  config = data_testing.make_config(dataset='imagenet2012', data_dir=imagenet_data_dir)
  expected = _global_batches(config, 1, 3)
  config.data_workers = 2
  with_workers = iterators.TrainIterator(config, process_index=0, process_count=1)
  for want in expected:
    np.testing.assert_array_equal(next(with_workers)['image'], want['image'])
  with_workers.close()
  evaluated = list(iterators.EvalIterator(config, process_index=0, process_count=1))
  config.data_workers = 0
  for a, b in zip(evaluated, iterators.EvalIterator(config, process_index=0, process_count=1)):
    np.testing.assert_array_equal(a['image'], b['image'])


def test_a_checkpoint_of_another_stream_is_refused(id_folder):
  config = data_testing.id_config(id_folder)
  saved = iterators.stream_identity(config)
  iterators.check_resumable(saved, config)
  config.seed, config.batch_size = 5, 8
  with pytest.raises(ValueError) as error:
    iterators.check_resumable(saved, config)
  assert 'seed: saved 0, now 5' in str(error.value)
  assert 'batch_size: saved 4, now 8' in str(error.value)
