"""Model weights on disk: an orbax checkpoint holding the variables and the model config.

This is what the converter and the export tool write and what `config.init_from` and
evaluation read: a directory with two orbax items, `variables` ({'params', 'batch_stats'})
and `model` (the SMT fields as JSON; for a segmenter, the UPerNet fields and the SMT
backbone's), so the model can be rebuilt without the training code.
`pretrained(name)` gives the official release weights by name (see smt_jax.pretrained).
"""
import dataclasses
import os
from typing import Any, Dict, Optional, Tuple, Union

import orbax.checkpoint as ocp

from smt_jax.models import SMT, UPerNet, abstract_variables

Model = Union[SMT, UPerNet]

# Fields that describe how to run the model, not what it is; not stored.
_RUNTIME_FIELDS = ('parent', 'name', 'dtype', 'param_dtype', 'ops', 'remat')


class WeightsError(ValueError):
  """A path that should hold a weights checkpoint does not; the message says how to make one."""


_MAKE_WEIGHTS = ('Make one with `python -m smt_jax.convert --checkpoint=OFFICIAL.pth --model=smt_t '
                 '--output_dir=DIR` (official weights) or `python -m smt_jax.tools.export '
                 '--checkpoint=WEIGHTS --output_dir=DIR --format=orbax`.')


def check_weights_dir(path: str, what: str = 'The weights checkpoint') -> str:
  """`path` as an absolute path if it holds a weights checkpoint, else one WeightsError.

  `what` names where the path came from (a flag or config field) in the message.
  """
  directory = os.path.abspath(os.path.expanduser(path))
  expected = 'a weights checkpoint directory holding the orbax items `variables` and `model`'
  if not os.path.exists(directory):
    problem = 'does not exist'
  elif not os.path.isdir(directory):
    problem = 'is a file'
  elif os.path.isdir(os.path.join(directory, 'checkpoints')):
    problem = ('is a training workdir (to continue that training, give it as --workdir '
               'of smt_jax.main)')
  else:
    missing = [item for item in ('variables', 'model')
               if not os.path.isdir(os.path.join(directory, item))]
    if not missing:
      return directory
    problem = f'has no `{"` or `".join(missing)}` item'
  raise WeightsError(f'{what} {directory} {problem}; expected {expected}. {_MAKE_WEIGHTS}')


def model_config(model: Model) -> Dict[str, Any]:
  """The architecture fields of `model` as JSON-able values."""
  if isinstance(model, UPerNet):
    return {'upernet': {'num_classes': model.num_classes, 'channels': model.channels,
                        'aux_channels': model.aux_channels, 'dropout': model.dropout},
            'backbone': model_config(model.backbone)}
  cfg = {}
  for field in dataclasses.fields(model):
    if field.name not in _RUNTIME_FIELDS:
      value = getattr(model, field.name)
      cfg[field.name] = list(value) if isinstance(value, (tuple, list)) else value
  return cfg


def _model_from_config(cfg: Dict[str, Any], runtime: Dict[str, Any]) -> Model:
  if 'upernet' in cfg:
    return UPerNet(_model_from_config(cfg['backbone'], runtime), **cfg['upernet'])
  return SMT(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items()}, **runtime)


def save(directory: str, variables: Dict[str, Any], model: Model) -> None:
  """Writes `variables` and `model`'s config to a new orbax checkpoint `directory`."""
  directory = os.path.abspath(directory)
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(directory, args=ocp.args.Composite(
        variables=ocp.args.StandardSave(variables),
        model=ocp.args.JsonSave(model_config(model))))


def load(directory: str, **runtime) -> Tuple[Model, Dict[str, Any]]:
  """Rebuilds the model saved in `directory` and returns (model, variables).

  `runtime` sets fields that are not stored, e.g. dtype=jnp.bfloat16 or ops='xla' (for a
  segmenter, of its backbone).
  """
  directory = check_weights_dir(directory)
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    cfg = ckptr.restore(directory, args=ocp.args.Composite(
        model=ocp.args.JsonRestore()))['model']
    model = _model_from_config(cfg, runtime)
    abstract = abstract_variables(model)
    variables = ckptr.restore(directory, args=ocp.args.Composite(
        variables=ocp.args.StandardRestore(abstract)))['variables']
  return model, variables


def pretrained(name: str, cache_dir: Optional[str] = None, progress: bool = True,
               **runtime) -> Tuple[SMT, Dict[str, Any]]:
  """(model, variables) of an official release: 'smt_t', 'smt_s', 'smt_b', 'smt_l_22k', ...

  Downloads and converts the release file on first use, then reads the cache offline;
  `runtime` as for `load`. The names and their input sizes: smt_jax.pretrained.RELEASES.
  """
  # Imported here: smt_jax.pretrained imports this module.
  from smt_jax import pretrained as releases  # pylint: disable=g-import-not-at-top
  return releases.load(name, cache_dir, progress, **runtime)
