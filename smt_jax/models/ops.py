"""How the model's layers are computed: one frozen set of layer constructors per backend.

The model builds every Linear layer with `ops.dense` and every convolution with `ops.conv`,
with the arguments of `nn.Dense` and `nn.Conv` (the way Flax's ResNet takes `conv:
ModuleDef`). Every set declares the same parameters with the same initializers, so
parameter trees, conversion and checkpoints do not depend on the set; only the computation
does, and every set computes the same function.

- `XLA`: stock Flax layers, for every backend whose compiler picks its own kernels (GPU,
  TPU). Not tuned for any of them.
- `CPU`: the same layers with the matmul and convolution functions of
  `smt_jax.models.cpu_ops`, forms that XLA:CPU runs much faster.

`resolve('auto')` picks one for JAX's default backend; it is the only place that does.
"""
import dataclasses
import functools
from typing import Callable, Union

import flax.linen as nn
import jax

from smt_jax.models import cpu_ops

ModuleDef = Callable[..., nn.Module]


@dataclasses.dataclass(frozen=True)
class Ops:
  """Constructors for the model's layers: `dense` as `nn.Dense`, `conv` as `nn.Conv`."""
  dense: ModuleDef = nn.Dense
  conv: ModuleDef = nn.Conv


XLA = Ops()
CPU = Ops(dense=functools.partial(nn.Dense, dot_general=cpu_ops.dot_general),
          conv=functools.partial(nn.Conv, conv_general_dilated=cpu_ops.conv_general_dilated))
SETS = {'xla': XLA, 'cpu': CPU}


def resolve(ops: Union[Ops, str], field: str = 'ops') -> Ops:
  """`ops` itself, or the set it names: 'xla', 'cpu', or 'auto' (CPU on the CPU backend,
  XLA elsewhere). A bad name raises ValueError naming `field`."""
  if isinstance(ops, Ops):
    return ops
  if ops == 'auto':
    return CPU if jax.default_backend() == 'cpu' else XLA
  if ops not in SETS:
    raise ValueError(f'{field} must be one of auto, {", ".join(SETS)} (or an Ops); got {ops!r}')
  return SETS[ops]

