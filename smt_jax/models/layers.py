"""Layers and initializers shared by the SMT modules that Flax has no stock version of."""
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# The official code initializes Linear weights with trunc_normal_(std=.02), biases with 0,
# and conv weights with N(0, 2 / fan_out) where fan_out = k*k*out_channels / groups.
dense_init = nn.initializers.truncated_normal(stddev=0.02)


def conv_init(groups: int = 1) -> nn.initializers.Initializer:
  """The official conv init for a kernel (k, k, in / groups, out): N(0, 2 / fan_out).

  Flax's fan_out does not divide by the groups, hence this initializer.
  """
  def init(key, shape, dtype=jnp.float32):
    fan_out = math.prod(shape[:-2]) * shape[-1] // groups
    return nn.initializers.normal(stddev=math.sqrt(2.0 / fan_out))(key, shape, dtype)
  return init


def drop_path(rate: float, deterministic: bool) -> nn.Module:
  """Stochastic depth: drops whole samples (the mask is broadcast over H, W, C)."""
  return nn.Dropout(rate=rate, broadcast_dims=(1, 2, 3), deterministic=deterministic)


class BatchNorm(nn.Module):
  """BatchNorm with PyTorch's semantics and state, so weights move both ways unchanged.

  Normalizes over every axis but the last. In training it normalizes with the batch's
  biased variance and updates the running variance with the unbiased one (momentum
  0.1 in PyTorch's convention), and counts `num_batches_tracked` as PyTorch does.
  Statistics are computed in float32 whatever `dtype` is. Under `jit` with a sharded
  batch the mean is over the global batch, i.e. synchronized BatchNorm.
  """
  use_running_average: bool
  momentum: float = 0.1
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (c,), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (c,), self.param_dtype)
    ra_mean = self.variable('batch_stats', 'mean', jnp.zeros, (c,), jnp.float32)
    ra_var = self.variable('batch_stats', 'var', jnp.ones, (c,), jnp.float32)
    count = self.variable('batch_stats', 'num_batches_tracked', jnp.zeros, (), jnp.int32)
    x32 = x.astype(jnp.float32)
    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      mean = x32.mean(axes)
      var = jnp.square(x32 - mean).mean(axes)
      if not self.is_initializing():
        n = x.size // c
        ra_mean.value = (1 - self.momentum) * ra_mean.value + self.momentum * mean
        ra_var.value = ((1 - self.momentum) * ra_var.value
                        + self.momentum * var * (n / max(n - 1, 1)))
        count.value = count.value + 1
    y = (x32 - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias
    return y.astype(self.dtype)
