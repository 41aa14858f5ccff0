"""Subprocess body for test_upernet: the UPerNet head in training on 8 simulated CPU devices.

Runs one training-mode step of UPerHead under jit twice, with the batch of 8 on one device
and sharded over 8, and prints one JSON line: the largest differences between the two runs'
logits and updated BatchNorm statistics, and how the sharded logits were laid out.
"""
import json
import os

os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=8'

import jax  # pylint: disable=g-import-not-at-top
from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from smt_jax.models.upernet import UPerHead  # pylint: disable=g-import-not-at-top


def main():
  rng = np.random.default_rng(0)
  feats = [rng.standard_normal((8, h, w, c)).astype(np.float32)
           for (h, w), c in zip(((22, 30), (11, 15), (6, 8), (3, 4)), (8, 16, 24, 32))]
  head = UPerHead(num_classes=5, channels=16, dropout=0.0)
  variables = jax.jit(head.init)(jax.random.key(0), feats)
  step = jax.jit(lambda v, f: head.apply(v, f, train=True, mutable=['batch_stats']))

  with jax.default_matmul_precision('highest'):
    one_logits, one_stats = step(variables, feats)
    mesh = jax.make_mesh((8,), ('data',))
    sharded = jax.device_put(feats, NamedSharding(mesh, P('data')))
    replicated = jax.device_put(variables, NamedSharding(mesh, P()))
    logits, stats = step(replicated, sharded)

  stat_diff = max(float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
                  for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(one_stats)))
  print(json.dumps({
      'devices': jax.device_count(),
      'logit_shards': len({s.device for s in logits.addressable_shards}),
      'logits_diff': float(np.abs(np.asarray(logits) - np.asarray(one_logits)).max()),
      'stats_diff': stat_diff,
  }))


if __name__ == '__main__':
  main()
