"""Per-process rows -> global jax.Arrays: one device, and 2 processes x 2 devices against
1 process x 4 devices, with every augmentation on: the same global batches bit for bit."""
import json
import os
import pathlib
import subprocess
import sys

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from . import data_testing
from smt_jax.data import iterators

HERE = pathlib.Path(__file__).resolve().parent
TIMEOUT_S = 300


def test_global_arrays_on_one_device(id_folder):
  mesh = jax.make_mesh((1, 1), ('data', 'fsdp'))
  sharding = NamedSharding(mesh, P(('data', 'fsdp')))
  config = data_testing.id_config(id_folder)
  local = next(iterators.TrainIterator(config, process_index=0, process_count=1))
  batch = next(iterators.TrainIterator(config, sharding=sharding, process_index=0,
                                       process_count=1))
  assert isinstance(batch['image'], jax.Array) and batch['image'].sharding == sharding
  np.testing.assert_array_equal(batch['image'], local['image'])
  np.testing.assert_array_equal(batch['label'], local['label'])


def _write_jpeg_folder(root: pathlib.Path) -> str:
  rng = np.random.default_rng(0)
  for i in range(20):
    folder = root / 'train' / data_testing.ID_FOLDER_CLASSES[i % 3]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f'{i:02d}.jpg').write_bytes(data_testing.jpeg_bytes(rng, 40 + i, 56 - i))
  return str(root)


def _run(root: str, num_processes: int):
  port = str(data_testing.free_port())
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(HERE), str(HERE.parents[1]), os.environ.get('PYTHONPATH', '')]))
  workers = [subprocess.Popen(
      [sys.executable, str(HERE / 'global_batch_worker.py'), root, str(num_processes),
       str(i), port], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(num_processes)]
  results = []
  for worker in workers:
    out, err = worker.communicate(timeout=TIMEOUT_S)
    assert worker.returncode == 0, err[-3000:]
    results.append(json.loads(out.strip().splitlines()[-1]))
  return results


def test_two_processes_build_the_batches_of_one(tmp_path):
  root = _write_jpeg_folder(tmp_path)
  two, (one,) = _run(root, 2), _run(root, 1)
  for result in (*two, one):
    assert result['global_shape'] == [8, 32, 32, 3]
    assert result['sharding_ok'] and result['local_rows_match']
    assert not result['cross_device_mixing']  # Mixup partners share a device
  # Raw images, labels, augmented images and soft targets of 3 steps.
  assert two[0]['digests'] == two[1]['digests'] == one['digests']
  assert len({d for step in one['digests'] for d in step}) == 12
