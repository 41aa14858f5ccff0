"""Training: `train_and_evaluate(config, workdir)`, the optax recipe, mesh sharding, checkpoints."""
from smt_jax.train.loop import train_and_evaluate

__all__ = ['train_and_evaluate']
