"""UPerNet segmentation heads (Xiao et al., ECCV 2018) on SMT's four stage maps, in Flax linen.

The heads of the official SMT segmentation configs (mmseg `UPerHead` and `FCNHead`,
configs/upernet_smt_*.py): pyramid pooling (scales 1, 2, 3, 6) on the stride-32 map, an FPN
over the four strides, 512 channels, and an auxiliary FCN head (256 channels) on the
stride-16 map whose loss is added in training. They compute what Hugging Face transformers'
`UperNetHead` / `UperNetFCNHead` (written after mmseg's) compute, NHWC
(tests/models/test_upernet.py); the dropout before each classifier is mmseg's, which
transformers leaves out.

Submodule names follow mmseg's state_dict, so `smt_jax.convert.upernet_to_flax` is a
one-to-one mapping: Flax `lateral_convs_0/conv/kernel` is mmseg
`lateral_convs.0.conv.weight`, `psp_modules_2/bn/scale` is `psp_modules.2.1.bn.weight`
(index 0 of that nn.Sequential is the pooling), `convs_0` is `convs.0`; transformers calls
`bn` `batch_norm` and `conv_seg` `classifier`.

Every conv-BN-ReLU uses `smt_jax.models.layers.BatchNorm` (PyTorch's statistics and
running-average update, so weights move both ways unchanged). The official configs use
SyncBN; under `jax.jit` with the batch sharded over devices the batch statistics are already
those of the global batch, so no cross-device option is needed.
"""
from typing import Any, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from smt_jax.models.layers import BatchNorm, conv_init
from smt_jax.models.smt import SMT

Dtype = Any


def adaptive_avg_pool(x: jax.Array, size: int) -> jax.Array:
  """torch.nn.AdaptiveAvgPool2d(size) on NHWC: output bin i averages input rows
  floor(i*H/size) to ceil((i+1)*H/size) (exclusive), likewise for columns; bins overlap
  when H is not a multiple of `size`."""
  def bins(n):
    m = np.zeros((size, n), np.float32)
    for i in range(size):
      start, end = i * n // size, -(-(i + 1) * n // size)
      m[i, start:end] = 1.0 / (end - start)
    return jnp.asarray(m, x.dtype)
  return jnp.einsum('ih,bhwc,jw->bijc', bins(x.shape[1]), x, bins(x.shape[2]))


def resize(x: jax.Array, size: Tuple[int, int]) -> jax.Array:
  """torch's interpolate(mode='bilinear', align_corners=False) on NHWC to `size` (H, W).

  Without antialiasing: jax.image.resize's default widens the kernel when shrinking (the
  pyramid pooling's 6x6 map on a stage-4 map smaller than 6), which torch does not.
  """
  return jax.image.resize(x, (x.shape[0], *size, x.shape[-1]), 'bilinear', antialias=False)


class ConvModule(nn.Module):
  """Conv (no bias), BatchNorm, ReLU: mmcv's ConvModule with its kaiming (fan_out) init."""
  features: int
  kernel_size: int
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    k = self.kernel_size
    x = nn.Conv(self.features, (k, k), padding=k // 2, use_bias=False, kernel_init=conv_init(),
                dtype=self.dtype, param_dtype=self.param_dtype, name='conv')(x)
    x = BatchNorm(not train, dtype=self.dtype, param_dtype=self.param_dtype, name='bn')(x)
    return nn.relu(x)


def cls_seg(head: nn.Module, x: jax.Array, train: bool) -> jax.Array:
  """mmseg's classifier, built inside `head`'s compact call: channel dropout (nn.Dropout2d:
  whole maps), then the 1x1 conv `conv_seg`, initialized N(0, 0.01^2)."""
  x = nn.Dropout(head.dropout, broadcast_dims=(1, 2), deterministic=not train)(x)
  return nn.Conv(head.num_classes, (1, 1), kernel_init=nn.initializers.normal(0.01),
                 dtype=head.dtype, param_dtype=head.param_dtype, name='conv_seg')(x)


class UPerHead(nn.Module):
  """The UPerNet decode head: per-pixel class logits at stride 4 from the four stage maps.

  `features` are the NHWC stage maps at strides 4, 8, 16, 32 (any sizes; for SMT each is
  the previous one halved, rounded up). The logits have the first map's size; the caller
  upsamples them to the image (bilinear, align_corners=False, as mmseg).
  """
  num_classes: int
  channels: int = 512
  pool_scales: Sequence[int] = (1, 2, 3, 6)
  dropout: float = 0.1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], train: bool = False) -> jax.Array:
    if len(features) != 4:
      raise ValueError(f'UPerHead takes the 4 stage maps, got {len(features)}.')
    conv = lambda k, name: ConvModule(self.channels, k, dtype=self.dtype,
                                      param_dtype=self.param_dtype, name=name)
    features = [jnp.asarray(f, self.dtype) for f in features]

    # Pyramid pooling on the stride-32 map: it and its pooled, projected and upsampled
    # copies, fused by a 3x3 conv.
    top = features[3]
    pooled = [resize(conv(1, f'psp_modules_{i}')(adaptive_avg_pool(top, s), train),
                     top.shape[1:3])
              for i, s in enumerate(self.pool_scales)]
    psp = conv(3, 'bottleneck')(jnp.concatenate([top, *pooled], axis=-1), train)

    laterals = [conv(1, f'lateral_convs_{i}')(f, train) for i, f in enumerate(features[:3])]
    laterals.append(psp)
    for i in range(3, 0, -1):  # top-down: each level gets the coarser one upsampled
      laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[1:3])
    outs = [conv(3, f'fpn_convs_{i}')(l, train) for i, l in enumerate(laterals[:3])]
    size = outs[0].shape[1:3]
    fused = jnp.concatenate([outs[0]] + [resize(o, size) for o in [*outs[1:], psp]],
                            axis=-1)
    return cls_seg(self, conv(3, 'fpn_bottleneck')(fused, train), train)


class FCNHead(nn.Module):
  """The auxiliary head: one 3x3 conv-BN-ReLU on stage map `in_index`, then the classifier
  (mmseg FCNHead with num_convs=1, concat_input=False). Logits at that map's stride."""
  num_classes: int
  channels: int = 256
  in_index: int = 2
  dropout: float = 0.1
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, features: Sequence[jax.Array], train: bool = False) -> jax.Array:
    x = jnp.asarray(features[self.in_index], self.dtype)
    x = ConvModule(self.channels, 3, dtype=self.dtype, param_dtype=self.param_dtype,
                   name='convs_0')(x, train)
    return cls_seg(self, x, train)


class UPerNet(nn.Module):
  """SMT backbone + UPerHead + auxiliary FCNHead, named as mmseg's EncoderDecoder
  (backbone, decode_head, auxiliary_head); `smt_jax.convert.upernet_to_flax` converts
  the heads of an mmseg checkpoint by those prefixes.

  Returns (logits at stride 4, auxiliary logits at stride 16); the caller upsamples them.
  Under jit, an unused auxiliary output is not computed. Training needs a 'dropout' rng.
  """
  backbone: SMT
  num_classes: int
  channels: int = 512
  aux_channels: int = 256
  dropout: float = 0.1

  @nn.compact
  def __call__(self, images, train: bool = False) -> Tuple[jax.Array, jax.Array]:
    features = self.backbone.features(images, train)
    common = dict(dropout=self.dropout, dtype=self.backbone.dtype,
                  param_dtype=self.backbone.param_dtype)
    logits = UPerHead(self.num_classes, self.channels, name='decode_head', **common)(
        features, train)
    aux = FCNHead(self.num_classes, self.aux_channels, name='auxiliary_head', **common)(
        features, train)
    return logits, aux
