"""Small layers shared by the SMT modules: initializers, depthwise convolution, drop path."""
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

# The official code initializes Linear weights with trunc_normal_(std=.02), biases with 0,
# and conv weights with N(0, 2 / fan_out) where fan_out = k*k*out_channels / groups.
dense_init = nn.initializers.truncated_normal(stddev=0.02)


def dense(features: int, name: str, use_bias: bool = True, dtype: Dtype = jnp.float32,
          param_dtype: Dtype = jnp.float32) -> nn.Dense:
  """A Linear layer with the official initialization."""
  return nn.Dense(features, use_bias=use_bias, kernel_init=dense_init, dtype=dtype,
                  param_dtype=param_dtype, name=name)


def conv_init(kernel_size: Sequence[int], out_per_group: int) -> Callable:
  """He-style normal init over the official `fan_out // groups`."""
  fan_out = math.prod(kernel_size) * out_per_group
  return nn.initializers.normal(stddev=math.sqrt(2.0 / fan_out))


def gelu(x):
  """Exact (erf) GELU, as torch.nn.GELU; Flax defaults to the tanh approximation."""
  return nn.gelu(x, approximate=False)


def depthwise_conv_lax(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 'same' depthwise conv through XLA's grouped convolution."""
  k = kernel.shape[0]
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(1, 1), padding=[(k // 2, k // 2)] * 2,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=x.shape[-1])


def depthwise_conv_shift(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 'same' depthwise conv as k*k shifted multiply-adds.

  XLA fuses this into one loop over the output; on CPU it is an order of magnitude
  faster than the grouped convolution. Accumulates in float32 whatever the input dtype.
  """
  k = kernel.shape[0]
  h, w = x.shape[1], x.shape[2]
  p = k // 2
  xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0))).astype(jnp.float32)
  taps = kernel[:, :, 0, :].astype(jnp.float32)
  out = None
  for a in range(k):
    for b in range(k):
      term = xp[:, a:a + h, b:b + w, :] * taps[a, b]
      out = term if out is None else out + term
  return out.astype(x.dtype)


DEPTHWISE_IMPLS = {'lax': depthwise_conv_lax, 'shift': depthwise_conv_shift}


def resolve_depthwise_impl(impl: str) -> Callable:
  """Maps 'auto' to the fastest formulation for the default backend."""
  if impl == 'auto':
    impl = 'shift' if jax.default_backend() == 'cpu' else 'lax'
  if impl not in DEPTHWISE_IMPLS:
    raise ValueError(f'dw_impl must be one of auto, {", ".join(DEPTHWISE_IMPLS)}; got {impl!r}')
  return DEPTHWISE_IMPLS[impl]


class DepthwiseConv(nn.Module):
  """Depthwise k x k convolution, stride 1, symmetric 'same' padding, with bias.

  The kernel has Flax's grouped-conv layout (k, k, 1, C), so either formulation in
  `DEPTHWISE_IMPLS` reads the same parameters and gives the same numbers.
  """
  kernel_size: int
  impl: str = 'auto'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    k = self.kernel_size
    kernel = self.param('kernel', conv_init((k, k), 1), (k, k, 1, c), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (c,), self.param_dtype)
    x = x.astype(self.dtype)
    y = resolve_depthwise_impl(self.impl)(x, kernel.astype(self.dtype))
    return y + bias.astype(self.dtype)


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
