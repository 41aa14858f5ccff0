"""Per-stage summary of an SMT variant: shapes, blocks, exact parameters, MACs, XLA FLOPs.

    python -m smt_jax.tools.summary --model=smt_t [--image_size=224]

Two compute figures, because they count different things. MACs are the multiply-
accumulates of every matmul and convolution (attention included), counted from the
jaxpr: the quantity the official code reports (2.46 G for SMT-T). XLA's FLOPs count
every arithmetic operation of the compiled program, including LayerNorm, softmax and
GELU, whose exact erf XLA expands into a ~60-operation polynomial per element; for
SMT-T that adds about 8% over 2 x MACs.
"""
import math
from typing import Any, Dict, List

from absl import app
from absl import flags
import jax
import jax.extend
import numpy as np

from smt_jax.models import SMT, abstract_variables, create_model

FLAGS = flags.FLAGS


def _define_flags():
  """Flags live here, not at import, so importing this module defines no flags."""
  flags.DEFINE_string('model', 'smt_t', 'Variant: smt_t, smt_s, smt_b or smt_l.')
  flags.DEFINE_integer('image_size', 224, 'Square input size.')


def count_params(params: Dict[str, Any]) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))


def compiled_flops(compiled) -> float:
  """FLOPs of one call of a compiled function, per XLA's cost analysis (0 if unknown)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):   # older jax returned one dict per computation
    cost = cost[0] if cost else {}
  return float((cost or {}).get('flops', 0.0))


def xla_flops(model: SMT, image_size: int, batch: int = 1) -> float:
  """FLOPs of one inference forward pass, from XLA's cost analysis of the compiled program.

  Compiled with the stock layers (`ops='xla'`), so the figure describes the model's own
  convolutions and matmuls, not the larger matmuls some op sets compute them with.
  """
  model = model.clone(ops='xla')
  images = jax.ShapeDtypeStruct((batch, image_size, image_size, 3), model.dtype)
  return compiled_flops(jax.jit(model.apply).lower(abstract_variables(model), images).compile())


def _jaxprs_in(params):
  for value in params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, jax.extend.core.ClosedJaxpr):
        yield item.jaxpr
      elif isinstance(item, jax.extend.core.Jaxpr):
        yield item


def _jaxpr_macs(jaxpr) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    out = eqn.outvars[0].aval
    if name == 'dot_general':
      (contracting, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval
      total += math.prod(out.shape) * math.prod(lhs.shape[i] for i in contracting)
    elif name == 'conv_general_dilated':
      rhs, spec = eqn.invars[1].aval, eqn.params['dimension_numbers'].rhs_spec
      total += math.prod(out.shape) * math.prod(rhs.shape[i] for i in spec[1:])
    repeats = eqn.params.get('length', 1) if name == 'scan' else 1
    total += repeats * sum(_jaxpr_macs(sub) for sub in _jaxprs_in(eqn.params))
  return total


def count_macs(model: SMT, image_size: int, batch: int = 1) -> int:
  """Multiply-accumulates of matmuls and convolutions in one inference forward pass.

  Traced with the stock layers (`ops='xla'`), so every convolution is counted as the
  official code's convolution.
  """
  model = model.clone(ops='xla')
  images = jax.ShapeDtypeStruct((batch, image_size, image_size, 3), model.dtype)
  return _jaxpr_macs(jax.make_jaxpr(model.apply)(abstract_variables(model), images).jaxpr)


def stage_rows(model: SMT, image_size: int) -> List[Dict[str, Any]]:
  """One row per stage: output shape, block kinds and parameter count."""
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), model.dtype)
  variables = abstract_variables(model)
  maps = jax.eval_shape(lambda v, x: model.apply(v, x, method='features'), variables, images)
  params = variables['params']
  rows = []
  for i, (kinds, fmap) in enumerate(zip(model.block_kinds(), maps)):
    names = [f'patch_embed{i + 1}', f'norm{i + 1}'] + [f'block{i + 1}_{j}'
                                                       for j in range(len(kinds))]
    rows.append(dict(stage=i + 1, shape=tuple(fmap.shape[1:]), sam=kinds.count('sam'),
                     msa=kinds.count('msa'), params=count_params([params[n] for n in names])))
  if 'head' in params:
    rows.append(dict(stage='head', shape=(model.num_classes,), sam=0, msa=0,
                     params=count_params(params['head'])))
  return rows


def summarize(name: str, image_size: int = 224) -> str:
  model = create_model(name)
  rows = stage_rows(model, image_size)
  lines = [f'{name} at {image_size}x{image_size}',
           f'{"stage":>6} {"output (H, W, C)":>18} {"SAM":>4} {"MSA":>4} {"params":>13}']
  for r in rows:
    lines.append(f'{r["stage"]!s:>6} {str(r["shape"]):>18} {r["sam"]:>4} {r["msa"]:>4} '
                 f'{r["params"]:>13,}')
  total = sum(r['params'] for r in rows)
  lines.append(f'parameters: {total:,}')
  lines.append(f'MACs (matmuls and convolutions, batch 1): '
               f'{count_macs(model, image_size) / 1e9:.2f} G')
  lines.append(f'FLOPs (XLA cost analysis of the compiled program, batch 1): '
               f'{xla_flops(model, image_size) / 1e9:.2f} G')
  return '\n'.join(lines)


def main(argv):
  del argv
  print(summarize(FLAGS.model, FLAGS.image_size))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
