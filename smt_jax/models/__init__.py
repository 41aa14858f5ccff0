"""SMT models: `create_model(name, **overrides)` builds a variant."""
import dataclasses

from smt_jax.models.smt import SMT, VARIANTS

FIELDS = tuple(f.name for f in dataclasses.fields(SMT) if f.name not in ('parent', 'name'))


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


__all__ = ['SMT', 'VARIANTS', 'create_model']
