"""Subprocess body for test_seg_metrics: area_counts under jit on a batch of 8 sharded over
4 simulated CPU devices, with two padded rows; prints one JSON line with both results."""
import json
import os

os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=4'

import jax  # pylint: disable=g-import-not-at-top
from jax.sharding import Mesh, NamedSharding  # pylint: disable=g-import-not-at-top
from jax.sharding import PartitionSpec as P  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from smt_jax.train import seg_metrics  # pylint: disable=g-import-not-at-top


def main():
  rng = np.random.default_rng(0)
  label = rng.integers(0, 6, (8, 16, 12))
  label[rng.random(label.shape) < 0.1] = 255
  pred = rng.integers(0, 6, label.shape)
  valid = (np.arange(8) < 6)[:, None, None]
  sharding = NamedSharding(Mesh(np.array(jax.devices()), ('data',)), P('data'))
  args = [jax.device_put(x, sharding) for x in (pred, label, valid)]
  counts = jax.jit(seg_metrics.area_counts, static_argnums=2)(args[0], args[1], 6, args[2])
  reference = seg_metrics.area_counts(pred[:6], label[:6], 6)
  print(json.dumps({'devices': jax.device_count(),
                    'shards': len(args[0].addressable_shards),
                    'sharded': np.asarray(counts).tolist(),
                    'reference': np.asarray(reference).tolist()}))


if __name__ == '__main__':
  main()
