"""SMT: Scale-Aware Modulation Transformer (Lin et al., ICCV 2023), in Flax linen.

Computes exactly what the official PyTorch code computes (checked against its outputs in
tests/test_parity.py). Tensors stay NHWC throughout; submodule names follow the official
state_dict names so that `smt_jax.convert` is a one-to-one mapping.
"""
import functools
from typing import Any, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from smt_jax.models import layers
from smt_jax.models.attention import attention_weights, dot_product_attention

Dtype = Any


class Stem(nn.Module):
  """Stage-1 downsampling ('Head' in the official code): conv/2, BN, ReLU, conv 2x2/2, LN."""
  dim: int
  head_conv: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    x = layers.StridedConv(self.dim, self.head_conv, 2, use_bias=False, dtype=self.dtype,
                           param_dtype=self.param_dtype, name='conv1')(x)
    x = layers.BatchNorm(not train, dtype=self.dtype, param_dtype=self.param_dtype,
                         name='bn')(x)
    x = nn.relu(x)
    x = layers.PatchifyConv(self.dim, 2, dtype=self.dtype, param_dtype=self.param_dtype,
                            name='conv2')(x)
    return nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, param_dtype=self.param_dtype,
                        name='norm')(x)


class PatchEmbed(nn.Module):
  """Stages 2-4 downsampling ('OverlapPatchEmbed'): conv 3x3/2 with padding 1, then LN."""
  dim: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = layers.StridedConv(self.dim, 3, 2, dtype=self.dtype, param_dtype=self.param_dtype,
                           name='proj')(x)
    return nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, param_dtype=self.param_dtype,
                        name='norm')(x)


class HeadMixer(nn.Module):
  """SAA's grouped 1x1 conv ('proj0') applied to MHMC heads without interleaving them.

  The official code interleaves the heads channel by channel (channel heads*j + i is
  channel j of head i) and applies a 1x1 conv with C/heads groups, so group j mixes
  channel j of every head. Here the input stays in head-major order (channel i*G + j)
  and the interleave is folded into how the grouped kernel, kept in Flax's layout
  (1, 1, heads, out), is read as (heads, groups, out_per_group). No runtime transpose:

  'grouped': `heads` multiply-adds per output, fused with what follows (fewest FLOPs);
  'dense': one matmul with the block-sparse (C, out) weight that the grouped kernel
  spells out. C/heads times the multiply-adds, but the matmul engine is so much faster
  than a broadcast multiply-add, and above all than the reductions that give the
  grouped kernel's gradient, that on CPU it is the faster of the two.
  """
  features: int
  heads: int
  impl: str = 'auto'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, s):
    groups = s.shape[-1] // self.heads
    out_per_group = self.features // groups
    kernel = self.param('kernel', layers.conv_init((1, 1), out_per_group),
                        (1, 1, self.heads, self.features), self.param_dtype)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), self.param_dtype)
    kernel = kernel.reshape(self.heads, groups, out_per_group).astype(self.dtype)
    s = s.astype(self.dtype)
    if layers.resolve_saa_mix_impl(self.impl) == 'dense':
      # dense[i*G + j, j'*out_per_group + o] = kernel[i, j, o] if j == j' else 0.
      block_diagonal = jnp.eye(groups, dtype=self.dtype)[None, :, :, None]
      dense = (kernel[:, :, None, :] * block_diagonal).reshape(s.shape[-1], self.features)
      return layers.linear(s, dense) + bias.astype(self.dtype)
    s = s.reshape(*s.shape[:-1], self.heads, groups, 1)
    y = sum(s[..., i, :, :] * kernel[i] for i in range(self.heads))
    return y.reshape(*y.shape[:-2], self.features) + bias.astype(self.dtype)


class SAM(nn.Module):
  """Scale-Aware Modulation: MHMC then SAA build a modulator that multiplies v.

  MHMC: `s` is split into `ca_num_heads` contiguous channel groups, head i convolved
  depthwise with kernel 3 + 2i. SAA: the heads are interleaved channel by channel and
  mixed by a grouped 1x1 conv whose every group sees one channel of each head, then
  BN, GELU and a 1x1 conv (see HeadMixer for how the interleave is folded away).
  """
  dim: int
  ca_num_heads: int
  expand_ratio: int
  qkv_bias: bool
  proj_drop: float
  dw_impl: str
  mhmc_impl: str = 'auto'
  saa_impl: str = 'auto'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    dense = functools.partial(layers.dense, dtype=self.dtype, param_dtype=self.param_dtype)
    heads, c = self.ca_num_heads, self.dim
    v, s = layers.fused_dense(x, [
        layers.DenseParams(c, self.qkv_bias, self.param_dtype, name=name)(c)
        for name in ('v', 's')], self.dtype)

    # MHMC: head i (channels [i*C/heads, (i+1)*C/heads)) convolved with kernel 3 + 2i.
    params = [layers.DepthwiseParams(3 + 2 * i, self.param_dtype, name=f'local_conv_{i + 1}')(
        c // heads) for i in range(heads)]
    s = layers.multi_kernel_depthwise(
        s.astype(self.dtype), [k.astype(self.dtype) for k, _ in params],
        [b.astype(self.dtype) for _, b in params], self.dw_impl, self.mhmc_impl)

    s = HeadMixer(c * self.expand_ratio, heads, self.saa_impl, dtype=self.dtype,
                  param_dtype=self.param_dtype, name='proj0')(s)
    s = layers.BatchNorm(not train, dtype=self.dtype, param_dtype=self.param_dtype,
                         name='bn')(s)
    s = layers.gelu(s)
    modulator = layers.PatchifyConv(c, 1, dtype=self.dtype, param_dtype=self.param_dtype,
                                    name='proj1')(s)
    self.sow('intermediates', 'modulator', modulator)

    x = dense(c, 'proj')(modulator * v)
    return nn.Dropout(self.proj_drop, deterministic=not train)(x)


class MSA(nn.Module):
  """Global multi-head self-attention plus a depthwise 3x3 conv on v (added before proj)."""
  dim: int
  sa_num_heads: int
  qkv_bias: bool
  attn_drop: float
  proj_drop: float
  dw_impl: str
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    dense = functools.partial(layers.dense, dtype=self.dtype, param_dtype=self.param_dtype)
    b, h, w, c = x.shape
    heads = self.sa_num_heads
    q, kv = layers.fused_dense(x, [
        layers.DenseParams(f, self.qkv_bias, self.param_dtype, name=name)(c)
        for f, name in ((c, 'q'), (2 * c, 'kv'))], self.dtype)
    k, v = jnp.split(kv, 2, axis=-1)

    tokens = lambda t: t.reshape(b, h * w, heads, c // heads)
    dropout_rng = None
    if train and self.attn_drop > 0:
      dropout_rng = self.make_rng('dropout')
    attn = dot_product_attention(tokens(q), tokens(k), tokens(v),
                                 dropout_rate=self.attn_drop, dropout_rng=dropout_rng)
    if self.is_mutable_collection('intermediates'):
      # For visualization only: the full (heads x N x N) maps, built only when asked for.
      self.sow('intermediates', 'attention', attention_weights(tokens(q), tokens(k)))
    attn = attn.reshape(b, h, w, c)
    local = layers.DepthwiseConv(3, impl=self.dw_impl, dtype=self.dtype,
                                 param_dtype=self.param_dtype, name='local_conv')(v)
    x = dense(c, 'proj')(attn + local)
    return nn.Dropout(self.proj_drop, deterministic=not train)(x)


class Mlp(nn.Module):
  """fc1, then GELU(h + dwconv3x3(h)), dropout, fc2, dropout."""
  hidden_dim: int
  drop: float
  dw_impl: str
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    dim = x.shape[-1]
    dense = functools.partial(layers.dense, dtype=self.dtype, param_dtype=self.param_dtype)
    h = dense(self.hidden_dim, 'fc1')(x)
    h = h + layers.DepthwiseConv(3, impl=self.dw_impl, dtype=self.dtype,
                                 param_dtype=self.param_dtype, name='dwconv')(h)
    h = nn.Dropout(self.drop, deterministic=not train)(layers.gelu(h))
    x = dense(dim, 'fc2')(h)
    return nn.Dropout(self.drop, deterministic=not train)(x)


class Block(nn.Module):
  """Pre-norm residual block: x + g1 * mixer(LN(x)), then x + g2 * mlp(LN(x))."""
  dim: int
  mixer: str  # 'sam' or 'msa'
  ca_num_heads: int
  sa_num_heads: int
  mlp_ratio: float
  qkv_bias: bool
  expand_ratio: int
  use_layerscale: bool
  layerscale_value: float
  drop: float
  attn_drop: float
  drop_path: float
  dw_impl: str
  mhmc_impl: str = 'auto'
  saa_impl: str = 'auto'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = lambda name: nn.LayerNorm(epsilon=1e-6, name=name, **common)
    if self.mixer == 'sam':
      mixer = SAM(self.dim, self.ca_num_heads, self.expand_ratio, self.qkv_bias, self.drop,
                  self.dw_impl, self.mhmc_impl, self.saa_impl, name='attn', **common)
    else:
      mixer = MSA(self.dim, self.sa_num_heads, self.qkv_bias, self.attn_drop, self.drop,
                  self.dw_impl, name='attn', **common)
    mlp = Mlp(int(self.dim * self.mlp_ratio), self.drop, self.dw_impl, name='mlp', **common)

    def scale(y, name):
      if not self.use_layerscale:
        return y
      gamma = self.param(name, nn.initializers.constant(self.layerscale_value), (self.dim,),
                         self.param_dtype)
      return y * gamma.astype(self.dtype)

    drop_path = layers.drop_path(self.drop_path, deterministic=not train)
    x = x + drop_path(scale(mixer(norm('norm1')(x), train), 'gamma_1'))
    return x + drop_path(scale(mlp(norm('norm2')(x), train), 'gamma_2'))


# What a rematerialized block keeps from its forward pass ('none' turns remat off):
# 'full' keeps only its input; 'dots' also keeps the outputs of its matmuls without batch
# dimensions (the Dense layers), so the backward pass recomputes only the cheap
# elementwise work, convolutions and attention.
REMAT_POLICIES = {
    'full': None,
    'dots': jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def remat_block(remat: str):
  """Block, or Block wrapped in `nn.remat` with the policy named `remat`."""
  if remat == 'none':
    return Block
  if remat not in REMAT_POLICIES:
    raise ValueError(f'remat must be one of none, {", ".join(REMAT_POLICIES)}; got {remat!r}')
  return nn.remat(Block, policy=REMAT_POLICIES[remat], static_argnums=(2,))


class SMT(nn.Module):
  """The SMT classifier / backbone. Field names are the official constructor's arguments.

  Images are NHWC floats of any size. `num_classes=0` returns pooled features.
  `dw_impl` picks the depthwise-conv formulation ('auto', 'shift' or 'lax') and
  `mhmc_impl` how MHMC's four kernels run ('auto', 'split' or 'fused', see
  `layers.multi_kernel_depthwise`), `saa_impl` how SAA mixes the heads ('auto', 'dense'
  or 'grouped', see `HeadMixer`); every choice reads the same parameters and computes
  the same function. `remat` recomputes each block's activations in the backward pass
  instead of storing them (see `REMAT_POLICIES`); it changes memory and time, never the
  numbers or the parameters.
  """
  embed_dims: Sequence[int] = (64, 128, 256, 512)
  ca_num_heads: Sequence[int] = (4, 4, 4, -1)
  sa_num_heads: Sequence[int] = (-1, -1, 8, 16)
  mlp_ratios: Sequence[float] = (4, 4, 4, 2)
  qkv_bias: bool = True
  depths: Sequence[int] = (2, 2, 8, 1)
  ca_attentions: Sequence[int] = (1, 1, 1, 0)
  head_conv: int = 3
  expand_ratio: int = 2
  use_layerscale: bool = False
  layerscale_value: float = 1e-4
  drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.0
  num_classes: int = 1000
  dw_impl: str = 'auto'
  mhmc_impl: str = 'auto'
  saa_impl: str = 'auto'
  remat: str = 'none'
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def block_kinds(self) -> Tuple[Tuple[str, ...], ...]:
    """Evolutionary Hybrid Network: stage 3 alternates SAM (even j) and MSA (odd j)."""
    kinds = []
    for i, depth in enumerate(self.depths):
      sam = bool(self.ca_attentions[i])
      kinds.append(tuple(
          'msa' if (i == 2 and j % 2) or not sam else 'sam' for j in range(depth)))
    return tuple(kinds)

  def setup(self):
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    drop_path_rates = np.linspace(0.0, self.drop_path_rate, sum(self.depths))
    cur = 0
    block_cls = remat_block(self.remat)
    for i, kinds in enumerate(self.block_kinds()):
      dim = self.embed_dims[i]
      if i == 0:
        embed = Stem(dim, self.head_conv, **common)
      else:
        embed = PatchEmbed(dim, **common)
      blocks = [
          block_cls(dim=dim, mixer=kind, ca_num_heads=self.ca_num_heads[i],
                    sa_num_heads=self.sa_num_heads[i], mlp_ratio=self.mlp_ratios[i],
                    qkv_bias=self.qkv_bias, expand_ratio=self.expand_ratio,
                    use_layerscale=self.use_layerscale,
                    layerscale_value=self.layerscale_value, drop=self.drop_rate,
                    attn_drop=self.attn_drop_rate, drop_path=float(drop_path_rates[cur + j]),
                    dw_impl=self.dw_impl, mhmc_impl=self.mhmc_impl,
                    saa_impl=self.saa_impl, **common)
          for j, kind in enumerate(kinds)]
      cur += len(kinds)
      # Attribute names become parameter paths: patch_embed1, block1_0, ..., norm1, ...
      setattr(self, f'patch_embed{i + 1}', embed)
      setattr(self, f'block{i + 1}', blocks)
      setattr(self, f'norm{i + 1}', nn.LayerNorm(epsilon=1e-6, **common))
    if self.num_classes > 0:
      self.head = layers.dense(self.num_classes, None, **common)

  def features(self, x, train: bool = False) -> Tuple[jax.Array, ...]:
    """The four stage maps (strides 4, 8, 16, 32), NHWC, each after its stage norm."""
    x = jnp.asarray(x, self.dtype)
    outs = []
    for i in range(len(self.depths)):
      embed = getattr(self, f'patch_embed{i + 1}')
      x = embed(x, train) if i == 0 else embed(x)
      for block in getattr(self, f'block{i + 1}'):
        x = block(x, train)
      x = getattr(self, f'norm{i + 1}')(x)
      outs.append(x)
    return tuple(outs)

  def __call__(self, x, train: bool = False) -> jax.Array:
    """Logits (or pooled stage-4 features when `num_classes` is 0)."""
    x = self.features(x, train)[-1].mean(axis=(1, 2))
    return self.head(x) if self.num_classes > 0 else x


# The official variants (models/smt.py and configs/smt/*.yaml). Stochastic depth is a
# training choice and lives in the recipes under configs/; smt_l turns layer scale on as
# its configs do (the official smt_l() constructor forgets to).
_COMMON = dict(ca_num_heads=(4, 4, 4, -1), sa_num_heads=(-1, -1, 8, 16), qkv_bias=True,
               ca_attentions=(1, 1, 1, 0), expand_ratio=2)
VARIANTS = {
    'smt_t': dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 8, 1),
                  mlp_ratios=(4, 4, 4, 2), head_conv=3, **_COMMON),
    'smt_s': dict(embed_dims=(64, 128, 256, 512), depths=(3, 4, 18, 2),
                  mlp_ratios=(4, 4, 4, 2), head_conv=3, **_COMMON),
    'smt_b': dict(embed_dims=(64, 128, 256, 512), depths=(4, 6, 28, 2),
                  mlp_ratios=(8, 6, 4, 2), head_conv=7, **_COMMON),
    'smt_l': dict(embed_dims=(96, 192, 384, 768), depths=(4, 6, 28, 4),
                  mlp_ratios=(8, 6, 4, 2), head_conv=7, use_layerscale=True, **_COMMON),
}
