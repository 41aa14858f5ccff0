"""Small layers shared by the SMT modules: initializers, depthwise convolution, drop path."""
import math
from typing import Any, Callable, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any

# The official code initializes Linear weights with trunc_normal_(std=.02), biases with 0,
# and conv weights with N(0, 2 / fan_out) where fan_out = k*k*out_channels / groups.
dense_init = nn.initializers.truncated_normal(stddev=0.02)


def linear(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """x @ kernel over x's last axis; on CPU one 2-D matmul over the flattened leading axes.

  The weight gradient contracts every leading axis. Given several, XLA:CPU first copies the
  output gradient transposed (the MLP's fc1 at batch 32 on 56x56x64, forward and backward:
  150 against 77 ms); given one, it reads both operands as they lie. Other backends keep the
  N-D matmul, which their compilers lay out themselves.
  """
  if jax.default_backend() != 'cpu':
    return x @ kernel
  y = x.reshape(-1, x.shape[-1]) @ kernel
  return y.reshape(*x.shape[:-1], kernel.shape[-1])


class Dense(nn.Module):
  """A Linear layer with the official init: nn.Dense's parameters, `linear`'s matmul."""
  features: int
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel = self.param('kernel', dense_init, (x.shape[-1], self.features), self.param_dtype)
    y = linear(x.astype(self.dtype), kernel.astype(self.dtype))
    if not self.use_bias:
      return y
    bias = self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype)
    return y + bias.astype(self.dtype)


def dense(features: int, name: str, use_bias: bool = True, dtype: Dtype = jnp.float32,
          param_dtype: Dtype = jnp.float32) -> Dense:
  """A `Dense` layer named `name`."""
  return Dense(features, use_bias, dtype, param_dtype, name=name)


class DenseParams(nn.Module):
  """Only the parameters of a `dense` layer, for callers that fuse several matmuls."""
  features: int
  use_bias: bool = True
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, in_features: int):
    kernel = self.param('kernel', dense_init, (in_features, self.features), self.param_dtype)
    if not self.use_bias:
      return kernel, jnp.zeros((self.features,), self.param_dtype)
    return kernel, self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype)


def fused_dense(x: jax.Array, params: Sequence[Tuple[jax.Array, jax.Array]],
                dtype: Dtype) -> Tuple[jax.Array, ...]:
  """Several Linear layers on the same input as one wider matmul: x is read once."""
  kernel = jnp.concatenate([k for k, _ in params], axis=1).astype(dtype)
  bias = jnp.concatenate([b for _, b in params]).astype(dtype)
  y = linear(x.astype(dtype), kernel) + bias
  splits = np.cumsum([k.shape[1] for k, _ in params])[:-1]
  return tuple(jnp.split(y, splits, axis=-1))


class PatchifyConv(nn.Module):
  """A p x p convolution with stride p ('VALID'), computed as a reshape and one matmul.

  The same function as nn.Conv with the same (p, p, in, out) kernel, but XLA:CPU runs
  the strided convolution's backward pass an order of magnitude slower than a matmul's.
  """
  features: int
  patch: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    p, (b, h, w, c) = self.patch, x.shape
    kernel = self.param('kernel', conv_init((p, p), self.features), (p, p, c, self.features),
                        self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype)
    h, w = h // p, w // p
    x = x[:, :h * p, :w * p].reshape(b, h, p, w, p, c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, h, w, p * p * c).astype(self.dtype)
    kernel = kernel.reshape(p * p * c, self.features).astype(self.dtype)
    return linear(x, kernel) + bias.astype(self.dtype)


class StridedConv(nn.Module):
  """A k x k convolution with stride s and symmetric padding k // 2, as one matmul.

  Reads the same (k, k, in, out) kernel as nn.Conv. The k*k strided slices of the padded
  input are stacked along channels (im2col) and multiplied by the kernel as a matrix, so
  the kernel gradient is a matmul too. XLA:CPU ran that gradient through its convolution
  at a few GFLOP/s: on an AVX2 machine, batch 32, patch_embed2 (56x56x64 -> 128) forward
  and backward took 649 ms as a convolution and 189 ms this way (SMT-B's 7x7 stem: 1476
  against 906 ms); the SMT-T training step, 9937 against 9352 ms (best of 4, interleaved).
  """
  features: int
  kernel_size: int
  stride: int
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    k, s, c = self.kernel_size, self.stride, x.shape[-1]
    kernel = self.param('kernel', conv_init((k, k), self.features), (k, k, c, self.features),
                        self.param_dtype)
    h, w = ((n + 2 * (k // 2) - k) // s + 1 for n in x.shape[1:3])
    xp = _pad_hw(x.astype(self.dtype), k // 2)
    columns = jnp.concatenate([xp[:, a:a + s * (h - 1) + 1:s, b:b + s * (w - 1) + 1:s]
                               for a in range(k) for b in range(k)], axis=-1)
    y = linear(columns, kernel.reshape(k * k * c, self.features).astype(self.dtype))
    if not self.use_bias:
      return y
    bias = self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype)
    return y + bias.astype(self.dtype)


def conv_init(kernel_size: Sequence[int], out_per_group: int) -> Callable:
  """He-style normal init over the official `fan_out // groups`."""
  fan_out = math.prod(kernel_size) * out_per_group
  return nn.initializers.normal(stddev=math.sqrt(2.0 / fan_out))


def gelu(x):
  """Exact (erf) GELU, as torch.nn.GELU; Flax defaults to the tanh approximation.

  jax.nn.gelu writes it with erfc. The erf form is cheaper per element, but XLA:CPU then
  moves the activation into the next matmul's YNNPACK fusion and materializes full-size
  broadcasts of its constants (3x the inference scratch memory of SMT-T, and slower).
  """
  return nn.gelu(x, approximate=False)


def depthwise_conv_lax(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 'same' depthwise conv through XLA's grouped convolution."""
  k = kernel.shape[0]
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(1, 1), padding=[(k // 2, k // 2)] * 2,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=x.shape[-1])


def _shifted_sum(xp: jax.Array, taps: jax.Array, h: int, w: int) -> jax.Array:
  """sum over taps (a, b) of xp[:, a:a+h, b:b+w, :] * taps[a, b]: one fused loop in XLA."""
  k = taps.shape[0]
  out = None
  for a in range(k):
    for b in range(k):
      term = xp[:, a:a + h, b:b + w, :] * taps[a, b]
      out = term if out is None else out + term
  return out


def _pad_hw(x: jax.Array, p: int) -> jax.Array:
  return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))


@jax.custom_vjp
def depthwise_conv_shift(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 'same' depthwise conv as k*k shifted multiply-adds.

  XLA fuses this into one loop over the output; on CPU it is an order of magnitude
  faster than the grouped convolution. Accumulates in float32 whatever the input dtype.
  The backward pass is hand-written (see `_shift_bwd`).
  """
  k = kernel.shape[0]
  xp = _pad_hw(x.astype(jnp.float32), k // 2)
  taps = kernel[:, :, 0, :].astype(jnp.float32)
  return _shifted_sum(xp, taps, x.shape[1], x.shape[2]).astype(x.dtype)


def _shift_fwd(x, kernel):
  return depthwise_conv_shift(x, kernel), (x, kernel)


# Kernel gradients of depthwise convs this narrow go through XLA's convolution, which
# XLA:CPU runs as a dense convolution on its matmul engine and then keeps the diagonal.
# Wider convs sum each tap's products over the image columns first on maps at least
# COLUMN_SUM_MIN_WIDTH wide (_kernel_grad_by_columns), over the images on narrower ones
# (_kernel_grad_by_images).
LAX_KERNEL_GRAD_MAX_CHANNELS = 64
COLUMN_SUM_MIN_WIDTH = 28
# Channels per dense convolution in that kernel gradient: a group of G channels costs G
# times the multiply-adds of the depthwise conv, and too few channels starve the matmul
# engine. At 14x14x64 with a 9x9 kernel: 22 ms for one group of 64, 5 ms in groups of 8.
KERNEL_GRAD_CONV_GROUP = 8
# Images reduced together per tap in the column-sum kernel gradient: small enough that the
# k*k passes over them stay in cache, large enough that per-pass overhead is small.
KERNEL_GRAD_CHUNK_BYTES = 8 * 2**20
# Images whose products one explicit sum adds up per tap on narrow maps: the elementwise
# expression XLA compiles has that many terms. In the SMT-T training step 8, 16 and 32
# ran at the same speed; 8 compiled fastest (57 against 66 s).
IMAGES_PER_SUM = 8


def _largest_divisor(n: int, at_most: int) -> int:
  """The largest divisor of n that is at most `at_most` (1 if `at_most` < 1)."""
  return max(d for d in range(1, max(1, min(n, at_most)) + 1) if n % d == 0)


def _images_per_chunk(x: jax.Array) -> int:
  """The largest divisor of the batch whose images fit in KERNEL_GRAD_CHUNK_BYTES (>= 1)."""
  return _largest_divisor(x.shape[0], KERNEL_GRAD_CHUNK_BYTES // (4 * math.prod(x.shape[1:])))


def _kernel_grad_by_columns(x: jax.Array, g: jax.Array, k: int) -> jax.Array:
  """sum over images and pixels of x shifted by each tap times g, as (k, k, 1, C).

  Per chunk of images, each tap's products are first summed over the image columns as
  explicit adds, which XLA fuses with the shifted slices into one elementwise loop, so
  XLA's reduction gets a tensor w times smaller and no copy of each shifted slice. (Over
  the whole batch at once XLA:CPU would materialize every tap's shifted copy of x.) SMT-T
  training at batch 32, interleaved in one process: best 5366 -> 4573 ms per step (median
  5493 -> 4948) with stages 1 and 2 done this way rather than reduced tap by tap.
  """
  n, h, w = x.shape[:3]
  chunk = _images_per_chunk(x)

  def chunk_taps(args):
    xp_c, g_c = args
    rows = [sum(xp_c[:, a:a + h, b + j] * g_c[:, :, j] for j in range(w))
            for a in range(k) for b in range(k)]
    return jnp.stack(rows, axis=-2).sum(axis=(0, 1))   # (chunk, h, k*k, C) -> (k*k, C)

  xp = _pad_hw(x, k // 2)
  per_chunk = jax.lax.map(chunk_taps, (xp.reshape(n // chunk, chunk, *xp.shape[1:]),
                                       g.reshape(n // chunk, chunk, *g.shape[1:])))
  return per_chunk.sum(axis=0).reshape(k, k, 1, -1)


def _kernel_grad_by_images(x: jax.Array, g: jax.Array, k: int) -> jax.Array:
  """_kernel_grad_by_columns, with each tap's products summed over the images instead.

  The sums run over groups of up to IMAGES_PER_SUM images, as explicit adds fused with
  the shifted slices, so XLA's reduction only sees (k*k, h, w, C) per group. On narrow
  maps this beats column sums: batch 32, 3x3, 14x14x1024: 22 ms, against 43 ms with
  column sums and 35-41 ms reduced tap by tap over chunks of images (14x14x256: 5.0
  against 9.6 ms tap by tap).
  """
  n, h, w = x.shape[:3]
  m = _largest_divisor(n, IMAGES_PER_SUM)
  xp = _pad_hw(x, k // 2).reshape(n // m, m, h + k - 1, w + k - 1, -1)
  g = g.reshape(n // m, m, h, w, -1)
  taps = [sum(xp[:, i, a:a + h, b:b + w] * g[:, i] for i in range(m))
          for a in range(k) for b in range(k)]
  return jnp.stack(taps).sum(axis=(1, 2, 3)).reshape(k, k, 1, -1)


def _kernel_grad_by_conv(x: jax.Array, g: jax.Array, k: int) -> jax.Array:
  """The kernel gradient through XLA's convolution, KERNEL_GRAD_CONV_GROUP channels at a time."""
  def group_grad(lo):
    x_i, g_i = x[..., lo:lo + KERNEL_GRAD_CONV_GROUP], g[..., lo:lo + KERNEL_GRAD_CONV_GROUP]
    _, conv_vjp = jax.vjp(lambda kk: depthwise_conv_lax(x_i, kk),
                          jnp.zeros((k, k, 1, x_i.shape[-1]), x.dtype))
    return conv_vjp(g_i)[0]
  return jnp.concatenate([group_grad(lo) for lo in
                          range(0, x.shape[-1], KERNEL_GRAD_CONV_GROUP)], axis=-1)


def _kernel_grad_formulation(x: jax.Array) -> Callable:
  """Per channel count and map width, the fastest measured of XLA's convolution, column
  sums and image sums (see LAX_KERNEL_GRAD_MAX_CHANNELS)."""
  if x.shape[-1] <= LAX_KERNEL_GRAD_MAX_CHANNELS:
    return _kernel_grad_by_conv
  if x.shape[2] >= COLUMN_SUM_MIN_WIDTH:
    return _kernel_grad_by_columns
  return _kernel_grad_by_images


def _shift_bwd(residuals, g):
  """Input gradient: the same conv of g with the kernel flipped, one fused loop.

  Kernel gradient: the formulation `_kernel_grad_formulation` picks for x's shape.
  """
  x, kernel = residuals
  k = kernel.shape[0]
  x32, g32 = x.astype(jnp.float32), g.astype(jnp.float32)
  flipped = kernel[::-1, ::-1, 0, :].astype(jnp.float32)
  dx = _shifted_sum(_pad_hw(g32, k // 2), flipped, x.shape[1], x.shape[2]).astype(x.dtype)
  dkernel = _kernel_grad_formulation(x)(x32, g32, k)
  return dx, dkernel.astype(kernel.dtype)


depthwise_conv_shift.defvjp(_shift_fwd, _shift_bwd)


DEPTHWISE_IMPLS = {'lax': depthwise_conv_lax, 'shift': depthwise_conv_shift}


def resolve_impl(field: str, impl: str, choices: Sequence[str], on_cpu: str,
                 elsewhere: str) -> str:
  """The formulation named by the model field `field`; 'auto' picks the measured fastest
  for the default backend (`on_cpu` on CPU, `elsewhere` otherwise)."""
  if impl == 'auto':
    return on_cpu if jax.default_backend() == 'cpu' else elsewhere
  if impl not in choices:
    raise ValueError(f'{field} must be one of auto, {", ".join(choices)}; got {impl!r}')
  return impl


def resolve_depthwise_impl(impl: str) -> Callable:
  """The depthwise-conv function that `dw_impl` names."""
  return DEPTHWISE_IMPLS[resolve_impl('dw_impl', impl, tuple(DEPTHWISE_IMPLS), 'shift', 'lax')]


def depthwise_params(module: nn.Module, kernel_size: int, channels: int, dtype: Dtype):
  """Declares a depthwise conv's kernel (Flax grouped layout (k, k, 1, C)) and bias."""
  k = kernel_size
  kernel = module.param('kernel', conv_init((k, k), 1), (k, k, 1, channels), dtype)
  bias = module.param('bias', nn.initializers.zeros, (channels,), dtype)
  return kernel, bias


class DepthwiseConv(nn.Module):
  """Depthwise k x k convolution, stride 1, symmetric 'same' padding, with bias.

  Either formulation in `DEPTHWISE_IMPLS` reads the same parameters and gives the same
  numbers.
  """
  kernel_size: int
  impl: str = 'auto'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kernel, bias = depthwise_params(self, self.kernel_size, x.shape[-1], self.param_dtype)
    y = resolve_depthwise_impl(self.impl)(x.astype(self.dtype), kernel.astype(self.dtype))
    return y + bias.astype(self.dtype)


class DepthwiseParams(nn.Module):
  """Only the parameters of a DepthwiseConv, for callers that fuse several convs."""
  kernel_size: int
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, channels: int):
    return depthwise_params(self, self.kernel_size, channels, self.param_dtype)


SAA_MIX_IMPLS = ('dense', 'grouped')


def resolve_saa_mix_impl(impl: str) -> str:
  """The SAA head-mixing formulation that `saa_impl` names."""
  return resolve_impl('saa_impl', impl, SAA_MIX_IMPLS, 'dense', 'grouped')


MULTI_KERNEL_IMPLS = ('split', 'fused')


def resolve_multi_kernel_impl(impl: str) -> str:
  """The MHMC formulation that `mhmc_impl` names."""
  return resolve_impl('mhmc_impl', impl, MULTI_KERNEL_IMPLS, 'split', 'fused')


def multi_kernel_depthwise(x: jax.Array, kernels: Sequence[jax.Array],
                           biases: Sequence[jax.Array], dw_impl: str = 'auto',
                           impl: str = 'auto') -> jax.Array:
  """Depthwise convs with a different kernel per contiguous channel group (MHMC).

  Group i is channels [i*G, (i+1)*G) with the odd-sized kernel `kernels[i]`, shape
  (k_i, k_i, 1, G). 'split' runs one conv per group and concatenates (fewest FLOPs);
  'fused' zero-pads every kernel to the largest size and runs a single conv over all
  channels (one kernel launch, twice the multiply-adds for SMT's 3/5/7/9). Zero taps add
  exact zeros, so both give the same numbers.
  """
  conv = resolve_depthwise_impl(dw_impl)
  bias = jnp.concatenate(biases)
  if resolve_multi_kernel_impl(impl) == 'split':
    xs = jnp.split(x, len(kernels), axis=-1)
    y = jnp.concatenate([conv(x_i, k_i) for x_i, k_i in zip(xs, kernels)], axis=-1)
  else:
    size = max(k.shape[0] for k in kernels)
    padded = [jnp.pad(k, [((size - k.shape[0]) // 2,) * 2] * 2 + [(0, 0)] * 2) for k in kernels]
    y = conv(x, jnp.concatenate(padded, axis=-1))
  return y + bias


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
