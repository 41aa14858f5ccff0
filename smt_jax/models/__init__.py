"""SMT models: `create_model(name, **overrides)` builds a variant."""
import dataclasses
from typing import Any, Dict, Union

import jax
import jax.numpy as jnp

from smt_jax.models.ops import Ops
from smt_jax.models.smt import SMT, VARIANTS
from smt_jax.models.upernet import UPerNet

FIELDS = tuple(f.name for f in dataclasses.fields(SMT) if f.name not in ('parent', 'name'))

# The model is size-agnostic: its variables do not depend on the input size, and a small
# input keeps tracing cheap.
_INIT_SIZE = 32


def create_model(name: str, **overrides) -> SMT:
  """Returns the SMT variant `name` ('smt_t', 'smt_s', 'smt_b', 'smt_l').

  `overrides` are any SMT module fields (e.g. num_classes=10, dtype=jnp.bfloat16).
  """
  if name not in VARIANTS:
    raise ValueError(f'Unknown model {name!r}; choose one of {", ".join(VARIANTS)}.')
  unknown = sorted(set(overrides) - set(FIELDS))
  if unknown:
    raise ValueError(f'Unknown SMT field(s) {", ".join(unknown)}; '
                     f'the fields are {", ".join(FIELDS)}.')
  return SMT(**{**VARIANTS[name], **overrides})


def init_input(model: Union[SMT, UPerNet]) -> jax.Array:
  """The input that `model.init` is traced with: one small image in the model's dtype."""
  dtype = model.backbone.dtype if isinstance(model, UPerNet) else model.dtype
  return jnp.zeros((1, _INIT_SIZE, _INIT_SIZE, 3), dtype)


def abstract_variables(model: Union[SMT, UPerNet]) -> Dict[str, Any]:
  """`model`'s variables as shapes and dtypes ({'params', 'batch_stats'}), computing nothing."""
  return jax.eval_shape(lambda: model.init(jax.random.key(0), init_input(model), train=False))


__all__ = ['SMT', 'UPerNet', 'VARIANTS', 'Ops', 'create_model', 'abstract_variables',
           'init_input']
