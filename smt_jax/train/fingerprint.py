"""Per-array checksums of a state tree, to tell a damaged checkpoint from an intact one.

Orbax stores arrays zstd-compressed without a checksum, so some damaged bytes (a flipped
bit, a partial copy) still decompress, into wrong numbers, and a restore succeeds
silently. Saving these checksums next to the arrays and recomputing them after a
restore catches that and names the array.

Each array's checksum is the wrapping uint32 sum of its bits times odd weights that
depend on the element's position, so a changed value or two swapped values change it.
Integer sums do not depend on summation order, so the result is the same whatever the
sharding, device count or process count; it is computed on the devices, where the
arrays are, and costs one read of the state.
"""
from typing import Any, Dict

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import numpy as np

from smt_jax.train.optim import path_str


def leaf_name(path) -> str:
  """'opt_state.1.mu.block1_0.attn.q.kernel': the name orbax gives the array on disk."""
  return path_str(path, '.')


def _bits(x: jax.Array) -> jax.Array:
  """`x`'s bit patterns as uint32 (narrower types zero-extended)."""
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  if x.dtype == jnp.bool_:
    x = x.astype(jnp.uint8)
  unsigned = jnp.dtype(f'uint{8 * x.dtype.itemsize}')
  if x.dtype != unsigned:
    x = jax.lax.bitcast_convert_type(x, unsigned)
  return x.astype(jnp.uint32)


def _checksum(x: jax.Array) -> jax.Array:
  bits = _bits(x)
  # Row-major position of every element, elementwise per dimension so a sharded
  # array stays sharded.
  position = jnp.zeros(bits.shape, jnp.uint32)
  stride = 1
  for dim in reversed(range(bits.ndim)):
    position = position + jax.lax.broadcasted_iota(jnp.uint32, bits.shape, dim) * np.uint32(
        stride % 2**32)
    stride *= bits.shape[dim]
  return jnp.sum((bits ^ np.uint32(0x9E3779B9)) * (2 * position + 1), dtype=jnp.uint32)


@jax.jit
def _checksums(tree):
  return jnp.stack([_checksum(x) for x in jax.tree.leaves(tree)])


def fingerprints(tree: Any) -> Dict[str, int]:
  """{array name: checksum} of every array in `tree`, the same on every process."""
  named = jax.tree_util.tree_leaves_with_path(tree)
  if not named:
    return {}
  sums = _checksums(tree)
  if not sums.is_fully_addressable:
    sums = multihost_utils.process_allgather(sums, tiled=True)
  return {leaf_name(path): int(s) for (path, _), s in zip(named, np.asarray(sums))}


def mismatches(saved: Dict[str, int], tree: Any) -> list:
  """Names of the arrays in `tree` whose checksum differs from `saved` (or is missing)."""
  now = fingerprints(tree)
  return [name for name, value in saved.items() if now.get(name) != value]
