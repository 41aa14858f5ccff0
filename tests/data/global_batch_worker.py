"""Subprocess body for test_global_arrays: one JAX process with 4 simulated CPU devices.

Usage: python global_batch_worker.py ROOT NUM_PROCESSES PROCESS_ID PORT
Prints one JSON line describing the global batch it built (8 rows per process).
"""
import json
import os
import sys

os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=4'

import jax  # pylint: disable=g-import-not-at-top
from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

import data_testing  # pylint: disable=g-import-not-at-top
from smt_jax.data import device_augment  # pylint: disable=g-import-not-at-top
from smt_jax.data import iterators  # pylint: disable=g-import-not-at-top


def main(root, num_processes, process_id, port):
  if num_processes > 1:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(f'localhost:{port}', num_processes, process_id)
  mesh = jax.make_mesh((2, 2 * num_processes), ('data', 'fsdp'))
  sharding = NamedSharding(mesh, P(('data', 'fsdp')))
  config = data_testing.id_config(root, batch_size=8 * num_processes, hflip=False)
  local = next(iterators.TrainIterator(config))
  batch = next(iterators.TrainIterator(config, sharding=sharding))
  ids = jax.jit(lambda x: x[:, 16, 16, 0].astype(np.int32),
                out_shardings=NamedSharding(mesh, P()))(batch['image'])

  prepare = jax.jit(device_augment.make_prepare(config.aug, 3))
  images, targets = prepare(jax.random.key(0), batch)
  compiled = prepare.lower(jax.random.key(0), batch).compile().as_text()
  shards = sorted(batch['image'].addressable_shards, key=lambda s: s.index[0].start)
  print(json.dumps({
      'global_shape': list(batch['image'].shape),
      'label_shape': list(batch['label'].shape),
      'sharding_ok': batch['image'].sharding == sharding,
      'local_rows_match': np.array_equal(np.concatenate([s.data for s in shards]),
                                         local['image']),
      'ids': [int(i) for i in np.asarray(ids)],
      'prepared_shape': list(images.shape),
      'targets_sum': float(np.asarray(jax.jit(lambda t: t.sum(),
                                              out_shardings=NamedSharding(mesh, P()))(targets))),
      'cross_device_mixing': any(op in compiled for op in ('collective-permute', 'all-to-all')),
  }))


if __name__ == '__main__':
  main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
