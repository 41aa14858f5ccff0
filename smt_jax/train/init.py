"""Initial model variables: fresh, or from a weights checkpoint (`config.init_from`).

Variables are created on one device of each process (every process computes the same
numbers) and then laid out on the mesh. Fresh initialization uses the 'rbg' PRNG, which XLA
compiles several times faster than threefry on CPU (tens of seconds for a full SMT); the
training randomness stays threefry, whose numbers do not depend on the sharding.
"""
from typing import Any, Dict

from absl import logging
import flax
import jax
import ml_collections
import numpy as np

from smt_jax import weights
from smt_jax.models import abstract_variables, init_input

__all__ = ['abstract_variables', 'initial_variables']


def _init_fn(model, seed: int):
  def init():
    return model.init(jax.random.key(seed, impl='rbg'), init_input(model), train=False)
  return init


def _merge_pretrained(fresh: Dict[str, Any], loaded: Dict[str, Any], source: str):
  """`loaded` values at `fresh`'s paths; a head of another shape stays fresh (fine-tuning)."""
  fresh_flat = flax.traverse_util.flatten_dict(fresh, sep='/')
  loaded_flat = flax.traverse_util.flatten_dict(loaded, sep='/')
  merged, reset, bad = {}, [], []
  for name, value in fresh_flat.items():
    other = loaded_flat.get(name)
    if other is not None and other.shape == value.shape:
      merged[name] = np.asarray(other, value.dtype)
    elif name.startswith('params/head/'):
      merged[name] = value
      reset.append(name)
    else:
      bad.append(f'{name} (model {value.shape}, checkpoint '
                 f'{None if other is None else other.shape})')
  if bad:
    raise ValueError(f'config.init_from={source!r} does not fit config.model: '
                     + '; '.join(bad))
  if reset:
    logging.info('init_from: classifier head re-initialized (%s): num_classes differs.',
                 ', '.join(reset))
  return flax.traverse_util.unflatten_dict(merged, sep='/')


def _place(tree, shardings):
  """Host numpy values (equal on every process) -> global arrays with `shardings`."""
  return jax.tree.map(
      lambda x, s: jax.make_array_from_callback(x.shape, s, lambda index: x[index]),
      tree, shardings)


def initial_variables(model, config: ml_collections.ConfigDict,
                      state_shardings) -> Dict[str, Any]:
  """{'params', 'batch_stats'} on the mesh, from init_from if set, else freshly drawn."""
  device = jax.local_devices()[0]
  variables = jax.jit(_init_fn(model, config.seed), out_shardings=(
      jax.sharding.SingleDeviceSharding(device)))()
  variables = jax.device_get(dict(variables))
  if config.init_from:
    _, loaded = weights.load(config.init_from)
    variables = _merge_pretrained(variables, jax.device_get(dict(loaded)), config.init_from)
  variables.setdefault('batch_stats', {})
  shardings = {'params': state_shardings.params, 'batch_stats': state_shardings.batch_stats}
  return _place(variables, shardings)
