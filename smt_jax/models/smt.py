"""SMT: Scale-Aware Modulation Transformer (Lin et al., ICCV 2023), in Flax linen.

Computes exactly what the official PyTorch code computes (checked against its outputs in
tests/test_parity.py). Tensors stay NHWC throughout; submodule names follow the official
state_dict names so that `smt_jax.convert` is a one-to-one mapping.

Every Linear layer is an `nn.Dense` and every convolution an `nn.Conv` (depthwise and
grouped ones through `feature_group_count`), built by the `ops` field's constructors:
`ops` chooses how they are computed for a backend (see `smt_jax.models.ops`), never what
they compute or which parameters they have.
"""
import functools
from typing import Any, List, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from smt_jax.models import ops as ops_lib
from smt_jax.models.attention import attention_weights, dot_product_attention
from smt_jax.models.layers import BatchNorm, conv_init, dense_init, drop_path

Dtype = Any


def _layers(module: nn.Module):
  """(dense, conv) constructors from `module.ops` with the official inits and its dtypes.

  conv(features, kernel_size, groups=1, **nn.Conv arguments) builds a square k x k conv.
  """
  common = dict(dtype=module.dtype, param_dtype=module.param_dtype)
  dense = functools.partial(module.ops.dense, kernel_init=dense_init, **common)

  def conv(features: int, kernel_size: int, groups: int = 1, **kwargs) -> nn.Module:
    return module.ops.conv(features, (kernel_size, kernel_size), feature_group_count=groups,
                           kernel_init=conv_init(groups), **common, **kwargs)
  return dense, conv


def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, as torch.nn.GELU; Flax defaults to the tanh approximation."""
  return nn.gelu(x, approximate=False)


class Stem(nn.Module):
  """Stage-1 downsampling ('Head' in the official code): conv/2, BN, ReLU, conv 2x2/2, LN."""
  dim: int
  head_conv: int
  ops: ops_lib.Ops = ops_lib.XLA
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    _, conv = _layers(self)
    k = self.head_conv
    x = conv(self.dim, k, strides=2, padding=k // 2, use_bias=False, name='conv1')(x)
    x = BatchNorm(not train, dtype=self.dtype, param_dtype=self.param_dtype, name='bn')(x)
    x = nn.relu(x)
    x = conv(self.dim, 2, strides=2, padding='VALID', name='conv2')(x)
    return nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, param_dtype=self.param_dtype,
                        name='norm')(x)


class PatchEmbed(nn.Module):
  """Stages 2-4 downsampling ('OverlapPatchEmbed'): conv 3x3/2 with padding 1, then LN."""
  dim: int
  ops: ops_lib.Ops = ops_lib.XLA
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    _, conv = _layers(self)
    x = conv(self.dim, 3, strides=2, padding=1, name='proj')(x)
    return nn.LayerNorm(epsilon=1e-5, dtype=self.dtype, param_dtype=self.param_dtype,
                        name='norm')(x)


class MHMC(nn.Module):
  """Multi-Head Mixed Convolution: the channels split into `heads` contiguous groups, head i
  convolved depthwise with kernel 3 + 2i ('local_conv_{i+1}'), stride 1, 'same' padding.

  Returns the list of head outputs; SAA joins them (see SAA)."""
  heads: int
  ops: ops_lib.Ops = ops_lib.XLA
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, s) -> List[jax.Array]:
    _, conv = _layers(self)
    width = s.shape[-1] // self.heads
    return [
        conv(width, 3 + 2 * i, groups=width, padding=1 + i, name=f'local_conv_{i + 1}')(head)
        for i, head in enumerate(jnp.split(s, self.heads, axis=-1))]


class SAA(nn.Module):
  """Scale-Aware Aggregation: the MHMC heads interleaved channel by channel (channel
  heads*j + i is channel j of head i), a grouped 1x1 conv whose group j mixes channel j of
  every head ('proj0', expanding by `expand_ratio`), BN, GELU, a 1x1 conv back ('proj1')."""
  dim: int
  expand_ratio: int
  ops: ops_lib.Ops = ops_lib.XLA
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, heads: Sequence[jax.Array], train: bool):
    _, conv = _layers(self)
    groups = heads[0].shape[-1]
    # Stacking the heads last and merging the two last axes is the interleave, in the one
    # copy that concatenating them would make anyway.
    s = jnp.stack(heads, axis=-1).reshape(*heads[0].shape[:-1], groups * len(heads))
    s = conv(self.dim * self.expand_ratio, 1, groups=groups, name='proj0')(s)
    s = BatchNorm(not train, dtype=self.dtype, param_dtype=self.param_dtype, name='bn')(s)
    return conv(self.dim, 1, name='proj1')(gelu(s))


class SAM(nn.Module):
  """Scale-Aware Modulation: MHMC then SAA turn `s` into a modulator that multiplies `v`.

  MHMC and SAA share this module's scope, so their layers keep the official names
  (attn.local_conv_1, attn.proj0, ...).
  """
  dim: int
  ca_num_heads: int
  expand_ratio: int
  qkv_bias: bool
  proj_drop: float
  ops: ops_lib.Ops = ops_lib.XLA
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  def setup(self):
    dense, _ = _layers(self)
    common = dict(ops=self.ops, dtype=self.dtype, param_dtype=self.param_dtype)
    self.v = dense(self.dim, use_bias=self.qkv_bias)
    self.s = dense(self.dim, use_bias=self.qkv_bias)
    self.mhmc = MHMC(self.ca_num_heads, **common)
    self.saa = SAA(self.dim, self.expand_ratio, **common)
    nn.share_scope(self, self.mhmc)
    nn.share_scope(self, self.saa)
    self.proj = dense(self.dim)
    self.dropout = nn.Dropout(self.proj_drop)

  def __call__(self, x, train: bool):
    modulator = self.saa(self.mhmc(self.s(x)), train)
    self.sow('intermediates', 'modulator', modulator)
    return self.dropout(self.proj(modulator * self.v(x)), deterministic=not train)


class MSA(nn.Module):
  """Global multi-head self-attention plus a depthwise 3x3 conv on v (added before proj)."""
  dim: int
  sa_num_heads: int
  qkv_bias: bool
  attn_drop: float
  proj_drop: float
  ops: ops_lib.Ops = ops_lib.XLA
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    dense, conv = _layers(self)
    b, h, w, c = x.shape
    heads = self.sa_num_heads
    q = dense(c, use_bias=self.qkv_bias, name='q')(x)
    k, v = jnp.split(dense(2 * c, use_bias=self.qkv_bias, name='kv')(x), 2, axis=-1)

    tokens = lambda t: t.reshape(b, h * w, heads, c // heads)
    dropout_rng = None
    if train and self.attn_drop > 0:
      dropout_rng = self.make_rng('dropout')
    attn = dot_product_attention(tokens(q), tokens(k), tokens(v),
                                 dropout_rate=self.attn_drop, dropout_rng=dropout_rng)
    if self.is_mutable_collection('intermediates'):
      # For visualization only: the full (heads x N x N) maps, built only when asked for.
      self.sow('intermediates', 'attention', attention_weights(tokens(q), tokens(k)))
    local = conv(c, 3, groups=c, padding=1, name='local_conv')(v)
    x = dense(c, name='proj')(attn.reshape(b, h, w, c) + local)
    return nn.Dropout(self.proj_drop, deterministic=not train)(x)


class Mlp(nn.Module):
  """fc1, then GELU(h + dwconv3x3(h)), dropout, fc2, dropout."""
  hidden_dim: int
  drop: float
  ops: ops_lib.Ops = ops_lib.XLA
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    dense, conv = _layers(self)
    h = dense(self.hidden_dim, name='fc1')(x)
    h = h + conv(self.hidden_dim, 3, groups=self.hidden_dim, padding=1, name='dwconv')(h)
    h = nn.Dropout(self.drop, deterministic=not train)(gelu(h))
    x = dense(x.shape[-1], name='fc2')(h)
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
  ops: ops_lib.Ops = ops_lib.XLA
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    common = dict(ops=self.ops, dtype=self.dtype, param_dtype=self.param_dtype)
    norm = lambda name: nn.LayerNorm(epsilon=1e-6, name=name, dtype=self.dtype,
                                     param_dtype=self.param_dtype)
    if self.mixer == 'sam':
      mixer = SAM(self.dim, self.ca_num_heads, self.expand_ratio, self.qkv_bias, self.drop,
                  name='attn', **common)
    else:
      mixer = MSA(self.dim, self.sa_num_heads, self.qkv_bias, self.attn_drop, self.drop,
                  name='attn', **common)
    mlp = Mlp(int(self.dim * self.mlp_ratio), self.drop, name='mlp', **common)

    def scale(y, name):
      if not self.use_layerscale:
        return y
      gamma = self.param(name, nn.initializers.constant(self.layerscale_value), (self.dim,),
                         self.param_dtype)
      return y * gamma.astype(self.dtype)

    path = drop_path(self.drop_path, deterministic=not train)
    x = x + path(scale(mixer(norm('norm1')(x), train), 'gamma_1'))
    return x + path(scale(mlp(norm('norm2')(x), train), 'gamma_2'))


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

  Images are NHWC floats of any size. `num_classes=0` returns pooled features. `ops` is
  how the layers are computed: an `ops.Ops`, or 'xla', 'cpu' or 'auto' (the set for JAX's
  default backend); every set reads the same parameters and computes the same function.
  `remat` recomputes each block's activations in the backward pass instead of storing
  them (see `REMAT_POLICIES`); it changes memory and time, never the numbers or the
  parameters.
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
  ops: Union[ops_lib.Ops, str] = 'auto'
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
    ops = ops_lib.resolve(self.ops)
    common = dict(ops=ops, dtype=self.dtype, param_dtype=self.param_dtype)
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
                    **common)
          for j, kind in enumerate(kinds)]
      cur += len(kinds)
      # Attribute names become parameter paths: patch_embed1, block1_0, ..., norm1, ...
      setattr(self, f'patch_embed{i + 1}', embed)
      setattr(self, f'block{i + 1}', blocks)
      setattr(self, f'norm{i + 1}', nn.LayerNorm(epsilon=1e-6, dtype=self.dtype,
                                                 param_dtype=self.param_dtype))
    if self.num_classes > 0:
      self.head = ops.dense(self.num_classes, kernel_init=dense_init, dtype=self.dtype,
                            param_dtype=self.param_dtype)

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
