"""smt_jax: the Scale-Aware Modulation Transformer in JAX/Flax."""
from smt_jax.models import SMT, create_model

__all__ = ['SMT', 'create_model']
