"""The CPU set of layer implementations: the same functions as XLA's, in forms XLA:CPU runs fast.

`dot_general` and `conv_general_dilated` take the arguments of their `jax.lax` namesakes and
are handed to `nn.Dense` and `nn.Conv` (see `smt_jax.models.ops.CPU`), so the layers, their
parameters and their initializers stay Flax's own. Only how the product is computed changes:

- matmuls over N-D activations run as one 2-D matmul over the flattened leading axes: given
  several contracted axes, XLA:CPU copies the output gradient transposed before the weight
  gradient; given one, it reads both operands as they lie;
- stride-1 depthwise convolutions are k*k shifted multiply-adds with a hand-written backward
  pass (`depthwise_conv_shift`): XLA:CPU's grouped convolution is an order of magnitude slower;
- strided convolutions are one matmul over stacked strided slices (im2col), and k x k /
  stride k ones a reshape and a matmul, so that their kernel gradients are matmuls too;
  XLA:CPU runs a convolution's kernel gradient at a small fraction of its matmul speed;
- grouped 1x1 convolutions (SAA's head mix) are one matmul with the block-diagonal weight
  the grouped kernel spells out: more multiply-adds, but XLA:CPU's matmul engine does them
  faster than a grouped convolution and its gradient.

Any other convolution goes to `jax.lax.conv_general_dilated` unchanged.
"""
import math
from typing import Callable

import jax
import jax.numpy as jnp

_NHWC = ('NHWC', 'HWIO', 'NHWC')


def dot_general(lhs, rhs, dimension_numbers, precision=None, preferred_element_type=None,
                **kwargs):
  """`lax.dot_general`; x @ kernel over x's last axis as a 2-D matmul."""
  (lhs_contract, rhs_contract), batch = dimension_numbers
  if (lhs.ndim > 2 and rhs.ndim == 2 and tuple(lhs_contract) == (lhs.ndim - 1,)
      and tuple(rhs_contract) == (0,) and batch == ((), ()) and not kwargs):
    y = jax.lax.dot_general(lhs.reshape(-1, lhs.shape[-1]), rhs, (((1,), (0,)), ((), ())),
                            precision=precision, preferred_element_type=preferred_element_type)
    return y.reshape(*lhs.shape[:-1], rhs.shape[-1])
  return jax.lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                             preferred_element_type=preferred_element_type, **kwargs)


def linear(x: jax.Array, kernel: jax.Array, precision=None) -> jax.Array:
  """x @ kernel over x's last axis, as `dot_general` computes it."""
  return dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)


def _pad_hw(x: jax.Array, p: int) -> jax.Array:
  return jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))


def _square(values) -> int:
  """The one value of a per-dimension pair, or None when the two differ."""
  values = tuple(values)
  return values[0] if len(set(values)) == 1 else None


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         precision=None, **kwargs):
  """`lax.conv_general_dilated`, by one of the formulations above for NHWC/HWIO convs.

  Handled: square kernels with equal strides and symmetric padding, no dilation. Everything
  else is passed to `lax.conv_general_dilated`.
  """
  def fallback():
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
        rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count, precision=precision, **kwargs)

  if lhs.ndim != 4 or kwargs or dimension_numbers != jax.lax.conv_dimension_numbers(
      lhs.shape, rhs.shape, _NHWC):
    return fallback()
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
  k, stride = _square(rhs.shape[:2]), _square(window_strides)
  pad = _square(p for pair in padding for p in pair)
  dilated = any(d != 1 for d in (*(lhs_dilation or ()), *(rhs_dilation or ())))
  if k is None or stride is None or pad is None or dilated:
    return fallback()
  in_per_group, features = rhs.shape[2:]
  if feature_group_count == 1:
    if stride == k and pad == 0:
      return patchify_conv(lhs, rhs, precision)
    return im2col_conv(lhs, rhs, stride, pad, precision)
  if in_per_group == 1 and features == lhs.shape[-1] and stride == 1 and pad == k // 2:
    return depthwise_conv_shift(lhs, rhs)
  if k == 1 and stride == 1:
    return grouped_pointwise_conv(lhs, rhs, feature_group_count, precision)
  return fallback()


def patchify_conv(x: jax.Array, kernel: jax.Array, precision=None) -> jax.Array:
  """A p x p convolution with stride p and no padding, as a reshape and one matmul."""
  p, (b, h, w, c) = kernel.shape[0], x.shape
  h, w = h // p, w // p
  x = x[:, :h * p, :w * p].reshape(b, h, p, w, p, c).transpose(0, 1, 3, 2, 4, 5)
  return linear(x.reshape(b, h, w, p * p * c), kernel.reshape(p * p * c, -1), precision)


def im2col_conv(x: jax.Array, kernel: jax.Array, stride: int, pad: int,
                precision=None) -> jax.Array:
  """A k x k convolution with stride s and padding `pad` on each side, as one matmul.

  The k*k strided slices of the padded input are stacked along channels and multiplied by
  the kernel read as a (k*k*in, out) matrix, so the kernel gradient is a matmul too.
  """
  k, c = kernel.shape[0], x.shape[-1]
  h, w = ((n + 2 * pad - k) // stride + 1 for n in x.shape[1:3])
  xp = _pad_hw(x, pad)
  columns = jnp.concatenate([
      xp[:, a:a + stride * (h - 1) + 1:stride, b:b + stride * (w - 1) + 1:stride]
      for a in range(k) for b in range(k)], axis=-1)
  return linear(columns, kernel.reshape(k * k * c, -1), precision)


def grouped_pointwise_conv(x: jax.Array, kernel: jax.Array, groups: int,
                           precision=None) -> jax.Array:
  """A 1x1 convolution with `groups` groups, as one matmul with a block-diagonal weight.

  dense[j*in_per_group + i, j'*out_per_group + o] = kernel[0, 0, i, j*out_per_group + o]
  if j == j', else 0.
  """
  in_per_group, features = kernel.shape[2:]
  out_per_group = features // groups
  blocks = kernel.reshape(in_per_group, groups, out_per_group).swapaxes(0, 1)
  block_diagonal = jnp.eye(groups, dtype=kernel.dtype)[:, None, :, None]
  dense = (blocks[:, :, None, :] * block_diagonal).reshape(groups * in_per_group, features)
  return linear(x, dense, precision)


def _shifted_sum(xp: jax.Array, taps: jax.Array, h: int, w: int) -> jax.Array:
  """sum over taps (a, b) of xp[:, a:a+h, b:b+w, :] * taps[a, b]: one fused loop in XLA."""
  k = taps.shape[0]
  out = None
  for a in range(k):
    for b in range(k):
      term = xp[:, a:a + h, b:b + w, :] * taps[a, b]
      out = term if out is None else out + term
  return out


def depthwise_conv_lax(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 'same' depthwise conv through XLA's grouped convolution (the reference)."""
  k = kernel.shape[0]
  return jax.lax.conv_general_dilated(
      x, kernel, window_strides=(1, 1), padding=[(k // 2, k // 2)] * 2,
      dimension_numbers=_NHWC, feature_group_count=x.shape[-1])


@jax.custom_vjp
def depthwise_conv_shift(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Stride-1 'same' depthwise conv, kernel (k, k, 1, C), as k*k shifted multiply-adds.

  XLA fuses this into one loop over the output. Accumulates in float32 whatever the input
  dtype. The backward pass is hand-written (see `_shift_bwd`).
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
# (_kernel_grad_by_images). Each threshold is where the measured faster formulation changes.
LAX_KERNEL_GRAD_MAX_CHANNELS = 64
COLUMN_SUM_MIN_WIDTH = 28
# Channels per dense convolution in that kernel gradient: a group of G channels costs G
# times the multiply-adds of the depthwise conv, and too few channels starve the matmul
# engine.
KERNEL_GRAD_CONV_GROUP = 8
# Images reduced together per tap in the column-sum kernel gradient: small enough that the
# k*k passes over them stay in cache, large enough that per-pass overhead is small.
KERNEL_GRAD_CHUNK_BYTES = 8 * 2**20
# Images whose products one explicit sum adds up per tap on narrow maps: the elementwise
# expression XLA compiles has that many terms; more compile slower and run no faster.
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
  the whole batch at once XLA:CPU would materialize every tap's shifted copy of x.)
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
  maps this beats column sums.
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
