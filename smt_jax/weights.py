"""Model weights on disk: an orbax checkpoint holding the variables and the model config.

This is what the converter writes and what `config.init_from` and evaluation read: a
directory with two orbax items, `variables` ({'params', 'batch_stats'}) and `model`
(the SMT fields as JSON), so the model can be rebuilt without the training code.
"""
import dataclasses
import os
from typing import Any, Dict, Tuple

import orbax.checkpoint as ocp

from smt_jax.models import SMT, abstract_variables

# Fields that describe how to run the model, not what it is; not stored.
_RUNTIME_FIELDS = ('parent', 'name', 'dtype', 'param_dtype', 'ops', 'remat')


def model_config(model: SMT) -> Dict[str, Any]:
  """The architecture fields of `model` as JSON-able values."""
  cfg = {}
  for field in dataclasses.fields(model):
    if field.name not in _RUNTIME_FIELDS:
      value = getattr(model, field.name)
      cfg[field.name] = list(value) if isinstance(value, (tuple, list)) else value
  return cfg


def save(directory: str, variables: Dict[str, Any], model: SMT) -> None:
  """Writes `variables` and `model`'s config to a new orbax checkpoint `directory`."""
  directory = os.path.abspath(directory)
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(directory, args=ocp.args.Composite(
        variables=ocp.args.StandardSave(variables),
        model=ocp.args.JsonSave(model_config(model))))


def load(directory: str, **runtime) -> Tuple[SMT, Dict[str, Any]]:
  """Rebuilds the model saved in `directory` and returns (model, variables).

  `runtime` sets fields that are not stored, e.g. dtype=jnp.bfloat16 or ops='xla'.
  """
  directory = os.path.abspath(directory)
  if not os.path.isdir(directory):
    raise FileNotFoundError(f'No weights checkpoint at {directory}.')
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    cfg = ckptr.restore(directory, args=ocp.args.Composite(
        model=ocp.args.JsonRestore()))['model']
    model = SMT(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()},
                **runtime)
    abstract = abstract_variables(model)
    variables = ckptr.restore(directory, args=ocp.args.Composite(
        variables=ocp.args.StandardRestore(abstract)))['variables']
  return model, variables
