"""Config checks that run before anything is compiled, and the model the config describes.

Every error names the config field to change, so a bad command line fails in a second
rather than after minutes of compilation.
"""
import os
from typing import Any, Dict

import jax
import jax.numpy as jnp
import ml_collections

from smt_jax import pretrained
from smt_jax import weights
from smt_jax.models import FIELDS, VARIANTS, create_model
from smt_jax.models import ops as ops_lib
from smt_jax.train import sharding

_DTYPE_FIELDS = ('dtype', 'param_dtype')


class ConfigError(ValueError):
  """An invalid setting; the message names the field."""


def model_overrides(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """`config.model` minus `name`, with dtype strings ('bfloat16') turned into jnp dtypes."""
  fields = {k: v for k, v in config.model.to_dict().items() if k != 'name'}
  for key in _DTYPE_FIELDS:
    if key in fields:
      try:
        fields[key] = jnp.dtype(fields[key])
      except TypeError:
        raise ConfigError(f'config.model.{key}={fields[key]!r} is not a dtype name.') from None
  if 'ops' in fields:
    try:
      ops_lib.resolve(fields['ops'], 'config.model.ops')
    except ValueError as e:
      raise ConfigError(str(e)) from None
  for key, value in fields.items():
    if isinstance(value, list):
      fields[key] = tuple(value)
  return fields


def create_model_from_config(config: ml_collections.ConfigDict, num_classes: int):
  overrides = model_overrides(config)
  overrides['num_classes'] = num_classes
  return create_model(config.model.name, **overrides)


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises ConfigError for settings that cannot work on the devices of this run."""
  if config.model.name not in VARIANTS:
    raise ConfigError(f'config.model.name={config.model.name!r} is not a model; choose one '
                      f'of {", ".join(VARIANTS)}.')
  unknown = sorted(set(config.model.keys()) - set(FIELDS) - {'name'})
  if unknown:
    raise ConfigError(f'config.model has unknown field(s) {", ".join(unknown)}; the model '
                      f'fields are {", ".join(FIELDS)}.')
  model_overrides(config)

  num_devices = jax.device_count()
  try:
    sharding.mesh_shape(config.mesh, num_devices)
  except ValueError as e:
    raise ConfigError(str(e)) from None

  accum = config.optim.grad_accum_steps
  if accum < 1:
    raise ConfigError(f'config.optim.grad_accum_steps={accum} must be >= 1.')
  if config.batch_size <= 0 or config.batch_size % (num_devices * accum):
    detail = f' x grad_accum_steps={accum}' if accum > 1 else ''
    raise ConfigError(
        f'config.batch_size={config.batch_size} (global) must be a positive multiple of the '
        f'{num_devices} devices{detail} = {num_devices * accum}.')
  if config.batch_size % jax.process_count():
    raise ConfigError(f'config.batch_size={config.batch_size} does not split evenly over '
                      f'{jax.process_count()} processes.')
  eval_batch = config.eval_batch_size or config.batch_size
  if eval_batch % num_devices:
    raise ConfigError(f'config.eval_batch_size={eval_batch} must be a multiple of the '
                      f'{num_devices} devices.')

  if config.init_from and config.init_from not in pretrained.RELEASES:
    if not os.path.exists(os.path.expanduser(config.init_from)):
      raise ConfigError(f'config.init_from={config.init_from!r} is neither a pretrained name '
                        f'({", ".join(pretrained.RELEASES)}) nor a directory; give a name or a '
                        'weights checkpoint written by smt_jax.convert or smt_jax.weights.save.')
    try:
      weights.check_weights_dir(config.init_from, 'config.init_from:')
    except weights.WeightsError as e:
      raise ConfigError(str(e)) from None
  for field in ('log_every_steps', 'checkpoint_every_steps', 'data_threads'):
    if config[field] <= 0:
      raise ConfigError(f'config.{field}={config[field]} must be positive.')
  if config.data_workers < 0:
    raise ConfigError(f'config.data_workers={config.data_workers} must be 0 (no worker '
                      'processes) or more.')
  if config.num_train_steps <= 0 and config.num_epochs <= 0 and not config.eval_only:
    raise ConfigError('Set config.num_epochs or config.num_train_steps to a positive number.')
