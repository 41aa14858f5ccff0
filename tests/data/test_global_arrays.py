"""Per-process batches -> global jax.Arrays: one device here, two processes x 4 devices."""
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import numpy as np

from . import data_testing
from smt_jax.data import iterators

HERE = pathlib.Path(__file__).resolve().parent


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


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def test_two_processes_build_one_global_batch(tmp_path):
  root = data_testing.write_id_folder(tmp_path, {'train': 24})
  port = _free_port()
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(HERE), str(HERE.parents[1]), os.environ.get('PYTHONPATH', '')]))
  workers = [subprocess.Popen(
      [sys.executable, str(HERE / 'global_batch_worker.py'), str(root), '2', str(i),
       str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(2)]
  results = []
  for worker in workers:
    out, err = worker.communicate(timeout=240)
    assert worker.returncode == 0, err[-3000:]
    results.append(json.loads(out.strip().splitlines()[-1]))
  for result in results:
    assert result['global_shape'] == [16, 32, 32, 3] and result['label_shape'] == [16]
    assert result['sharding_ok'] and result['local_rows_match']
    assert result['prepared_shape'] == [16, 32, 32, 3]
    assert abs(result['targets_sum'] - 16) < 1e-3
    assert not result['cross_device_mixing']  # Mixup partners share a device
  assert results[0]['ids'] == results[1]['ids']
  ids = results[0]['ids']
  assert len(set(ids)) == 16 and set(ids) <= set(range(24))  # disjoint process shares
