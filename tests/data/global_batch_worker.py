"""Subprocess body for test_global_arrays: one JAX process of a 4-device run on CPU.

Usage: python global_batch_worker.py ROOT NUM_PROCESSES PROCESS_ID PORT
The run has 4 simulated CPU devices in all, 4 / NUM_PROCESSES per process. Prints one JSON
line describing the first global batches it built, with full augmentation (host: crop,
flip, RandAugment; device: random erasing, Mixup/CutMix).
"""
import hashlib
import json
import os
import sys

NUM_PROCESSES = int(sys.argv[2])
os.environ['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={4 // NUM_PROCESSES}'

import jax  # pylint: disable=g-import-not-at-top
from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

import data_testing  # pylint: disable=g-import-not-at-top
from smt_jax.data import device_augment  # pylint: disable=g-import-not-at-top
from smt_jax.data import iterators  # pylint: disable=g-import-not-at-top

NUM_STEPS = 3


def _digest(array: jax.Array) -> str:
  return hashlib.sha256(np.asarray(multihost_utils.process_allgather(array, tiled=True))
                        .tobytes()).hexdigest()


def main(root, process_id, port):
  if NUM_PROCESSES > 1:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(f'localhost:{port}', NUM_PROCESSES, process_id)
  mesh = jax.make_mesh((2, 2), ('data', 'fsdp'))
  sharding = NamedSharding(mesh, P(('data', 'fsdp')))
  config = data_testing.make_config(dataset='folder', data_dir=root, batch_size=8)
  local = iterators.TrainIterator(config)
  batches = iterators.TrainIterator(config, sharding=sharding)
  prepare = jax.jit(device_augment.make_prepare(config.aug, 3))
  digests, local_rows_match = [], True
  for step in range(NUM_STEPS):
    batch, rows = next(batches), next(local)
    shards = sorted(batch['image'].addressable_shards, key=lambda s: s.index[0].start)
    local_rows_match &= np.array_equal(
        np.concatenate([s.data for s in shards]), rows['image'])
    images, targets = prepare(jax.random.fold_in(jax.random.key(0), step), batch)
    digests.append([_digest(batch['image']), _digest(batch['label']), _digest(images),
                    _digest(targets)])
  compiled = prepare.lower(jax.random.key(0), batch).compile().as_text()
  print(json.dumps({
      'global_shape': list(batch['image'].shape),
      'sharding_ok': batch['image'].sharding == sharding,
      'local_rows_match': bool(local_rows_match),
      'digests': digests,
      'cross_device_mixing': any(op in compiled for op in ('collective-permute', 'all-to-all')),
  }))
  local.close()
  batches.close()


if __name__ == '__main__':
  main(sys.argv[1], int(sys.argv[3]), int(sys.argv[4]))
