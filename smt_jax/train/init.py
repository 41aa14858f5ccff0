"""Initial model variables: fresh, or from weights (`config.init_from`: a directory or a name).

From a checkpoint, a classifier head of another number of classes is new, except from
ImageNet-22K (21,841 classes) to ImageNet-1K, which keeps the 1K classes' rows.

Variables are created on one device of each process (every process computes the same
numbers) and then laid out on the mesh. Fresh initialization uses the 'rbg' PRNG, which XLA
compiles several times faster than threefry on CPU (tens of seconds for a full SMT); the
training randomness stays threefry, whose numbers do not depend on the sharding.
"""
from typing import Any, Callable, Dict, List, Tuple

from absl import logging
import flax
import jax
import ml_collections
import numpy as np

from smt_jax import labels
from smt_jax import pretrained
from smt_jax import weights
from smt_jax.models import abstract_variables, init_input

__all__ = ['abstract_variables', 'fill', 'fresh_variables', 'initial_variables',
           'load_weights', 'place']


def _init_fn(model, seed: int):
  def init():
    return model.init(jax.random.key(seed, impl='rbg'), init_input(model), train=False)
  return init


def _head_of_1k_from_22k(fresh_flat, loaded_flat):
  """A 22K head's rows of the 1K classes when a 1K model starts from 22K weights, else None.

  The official fine-tuning does the same (`load_pretrained`); any other change of the
  number of classes starts a new head.
  """
  kernel, bias = loaded_flat.get('params/head/kernel'), loaded_flat.get('params/head/bias')
  fresh_bias = fresh_flat.get('params/head/bias')
  if (bias is None or fresh_bias is None or bias.shape != (labels.IMAGENET_22K_CLASSES,)
      or fresh_bias.shape != (1000,)):
    return None
  rows = labels.imagenet22k_rows_of_1k()
  return {'params/head/kernel': kernel[:, rows], 'params/head/bias': bias[rows]}


def fill(fresh: Dict[str, Any], loaded: Dict[str, Any], source: str, model: str,
         stays_fresh: Callable[[str, Any], bool]) -> Tuple[Dict[str, Any], List[str]]:
  """(filled, names left fresh): `fresh` with each array taken from `loaded` where that has
  an array of the same name and shape.

  Both are flat {name: array}. An array without a fitting counterpart stays fresh where
  `stays_fresh(name, counterpart or None)`; every other one is named in one ValueError
  saying that `source` does not fit `model`.
  """
  filled, reset, bad = dict(fresh), [], []
  for name, value in fresh.items():
    other = loaded.get(name)
    if other is not None and other.shape == value.shape:
      filled[name] = np.asarray(other, value.dtype)
    elif stays_fresh(name, other):
      reset.append(name)
    else:
      bad.append(f'{name} (model {value.shape}, checkpoint '
                 f'{None if other is None else other.shape})')
  if bad:
    raise ValueError(f'config.init_from={source!r} does not fit {model}: ' + '; '.join(bad))
  return filled, reset


def _merge_pretrained(fresh: Dict[str, Any], loaded: Dict[str, Any], source: str):
  """`loaded` values at `fresh`'s paths; a head of another shape is the 22K head's 1K rows
  (22K -> 1K) or stays fresh (fine-tuning to other classes)."""
  fresh_flat = flax.traverse_util.flatten_dict(fresh, sep='/')
  loaded_flat = flax.traverse_util.flatten_dict(loaded, sep='/')
  head_1k = _head_of_1k_from_22k(fresh_flat, loaded_flat)
  if head_1k is not None:
    loaded_flat.update(head_1k)
    logging.info('init_from: ImageNet-22K head -> its rows of the 1,000 ImageNet-1K classes.')
  merged, reset = fill(fresh_flat, loaded_flat, source, 'config.model',
                       lambda name, _: name.startswith('params/head/'))
  if reset:
    logging.info('init_from: classifier head re-initialized (%s): num_classes differs.',
                 ', '.join(reset))
  return flax.traverse_util.unflatten_dict(merged, sep='/')


def place(tree, shardings):
  """Host numpy values (equal on every process) -> global arrays with `shardings`."""
  return jax.tree.map(
      lambda x, s: jax.make_array_from_callback(x.shape, s, lambda index: x[index]),
      tree, shardings)


def fresh_variables(init: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
  """`init()`'s variables as host numpy values, computed on one device of this process."""
  device = jax.local_devices()[0]
  variables = jax.jit(init, out_shardings=jax.sharding.SingleDeviceSharding(device))()
  return jax.device_get(dict(variables))


def load_weights(source: str) -> Dict[str, Any]:
  """The variables of a pretrained release name or a weights directory, on the host."""
  if source in pretrained.RELEASES:
    _, loaded = weights.pretrained(source)
  else:
    _, loaded = weights.load(source)
  return jax.device_get(dict(loaded))


def initial_variables(model, config: ml_collections.ConfigDict,
                      state_shardings) -> Dict[str, Any]:
  """{'params', 'batch_stats'} on the mesh, from init_from if set, else freshly drawn."""
  variables = fresh_variables(_init_fn(model, config.seed))
  if config.init_from:
    variables = _merge_pretrained(variables, load_weights(config.init_from), config.init_from)
  variables.setdefault('batch_stats', {})
  shardings = {'params': state_shardings.params, 'batch_stats': state_shardings.batch_stats}
  return place(variables, shardings)
