"""Device mesh from the config, and partition rules that turn a state tree into shardings.

The mesh has two named axes: 'data' (pure data parallelism) and 'fsdp' (the batch is
split over it too, and so are large parameters and their optimizer state). A rule is a
(regex, spec) pair matched against leaf paths such as 'params/block3_5/attn/kv/kernel'
or 'opt_state/1/mu/block3_5/attn/kv/kernel'; the first match wins. A spec is
'fsdp' (split the largest dimension divisible by the fsdp axis size, if the tensor is
large enough; otherwise replicate), 'replicate', or a tuple of mesh axis names / None per
dimension.
"""
import re
from typing import Any, Sequence, Tuple

import jax
import ml_collections
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from smt_jax.train.optim import path_str

AXES = ('data', 'fsdp')
BATCH_AXES = AXES  # the batch is split over every device
DEFAULT_RULES = (('.*', 'fsdp'),)


def mesh_shape(mesh_config: ml_collections.ConfigDict, num_devices: int) -> Tuple[int, int]:
  """Axis sizes for ('data', 'fsdp'); -1 means 'all remaining devices'."""
  sizes = [int(mesh_config.data), int(mesh_config.fsdp)]
  if sizes.count(-1) > 1:
    raise ValueError('config.mesh: at most one of data, fsdp may be -1.')
  if any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f'config.mesh: axis sizes must be positive or -1, got {sizes}.')
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if num_devices % known:
      raise ValueError(f'config.mesh: {num_devices} devices do not split into a mesh with '
                       f'data={mesh_config.data}, fsdp={mesh_config.fsdp}.')
    sizes[sizes.index(-1)] = num_devices // known
  if int(np.prod(sizes)) != num_devices:
    raise ValueError(f'config.mesh: data={sizes[0]} x fsdp={sizes[1]} does not match '
                     f'the {num_devices} devices.')
  return tuple(sizes)


def create_mesh(mesh_config: ml_collections.ConfigDict, devices=None) -> Mesh:
  """The ('data', 'fsdp') mesh over all devices (of all processes)."""
  devices = jax.devices() if devices is None else devices
  shape = mesh_shape(mesh_config, len(devices))
  return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES), devices=devices)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over every mesh axis."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def _fsdp_spec(shape: Sequence[int], fsdp_size: int, min_size: int) -> P:
  if fsdp_size == 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
    return P()
  for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
    if shape[dim] % fsdp_size == 0:
      spec = [None] * len(shape)
      spec[dim] = 'fsdp'
      return P(*spec)
  return P()


def spec_for(name: str, shape: Sequence[int], rules, fsdp_size: int, min_size: int) -> P:
  """PartitionSpec of the leaf `name` with `shape` under the first matching rule."""
  for pattern, spec in rules:
    if re.fullmatch(pattern, name):
      if spec == 'fsdp':
        return _fsdp_spec(shape, fsdp_size, min_size)
      if spec == 'replicate':
        return P()
      if len(spec) != len(shape):
        raise ValueError(f'Partition rule {pattern!r} gives {spec} to {name} of shape {shape}.')
      return P(*spec)
  return P()


def tree_shardings(tree: Any, mesh: Mesh, rules=DEFAULT_RULES, min_size: int = 2 ** 14) -> Any:
  """NamedShardings for every leaf of `tree` (arrays or ShapeDtypeStructs)."""
  fsdp_size = mesh.shape['fsdp']
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: NamedSharding(
          mesh, spec_for(path_str(path), leaf.shape, rules, fsdp_size, min_size)), tree)
