"""Writes configs.json and smt_micro_{a,b,c}.npz with the official SMT model code.

Run with the official repository (github.com/AFeng-x/SMT, commit 11e954d) on the path;
see README.md here for the environment and the command.

Each case is a small model built by the official `models.smt.SMT(...)` constructor. Every
parameter and buffer that affects the output is then overwritten with random float32
values, so that a port which maps one of them to the wrong place, transposes it or ignores
it gives different outputs:
- weights of at least two dimensions: normal with standard deviation 1/sqrt(fan in),
  which keeps activations near unit scale through the network;
- biases: normal, standard deviation 0.1;
- LayerNorm/BatchNorm scales: uniform in [0.75, 1.25]; layer-scale gammas: [0.5, 1.5];
- BatchNorm running means: normal, 0.1; running variances: uniform in [0.5, 1.5].
The model then runs in eval() mode and float64 on a float32 input, so the reference has
no rounding error of its own. Stage outputs are taken after each stage's norm.

It also prints the exact parameter counts of the four full-size variants (README's table).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

_COMMON = dict(ca_num_heads=[4, 4, 4, -1], sa_num_heads=[-1, -1, 8, 16], qkv_bias=True,
               ca_attentions=[1, 1, 1, 0], expand_ratio=2)
CASES = {
    'smt_micro_a': (dict(_COMMON, embed_dims=[16, 32, 64, 128], mlp_ratios=[4, 4, 4, 2],
                         depths=[2, 1, 4, 1], head_conv=3, num_classes=10), (2, 3, 64, 64)),
    'smt_micro_b': (dict(_COMMON, embed_dims=[24, 48, 96, 192], mlp_ratios=[8, 6, 4, 2],
                         depths=[1, 2, 3, 2], head_conv=7, use_layerscale=True,
                         num_classes=7), (1, 3, 64, 96)),
    'smt_micro_c': (dict(_COMMON, embed_dims=[16, 32, 64, 128], mlp_ratios=[2, 3, 4, 2],
                         depths=[1, 1, 2, 1], head_conv=3, num_classes=5), (1, 3, 45, 70)),
}
# The official variants (models/build.py and configs/*.yaml); 1000 classes, 224x224.
VARIANTS = {
    'smt_t': dict(embed_dims=[64, 128, 256, 512], mlp_ratios=[4, 4, 4, 2], depths=[2, 2, 8, 1],
                  head_conv=3),
    'smt_s': dict(embed_dims=[64, 128, 256, 512], mlp_ratios=[4, 4, 4, 2], depths=[3, 4, 18, 2],
                  head_conv=3),
    'smt_b': dict(embed_dims=[64, 128, 256, 512], mlp_ratios=[8, 6, 4, 2], depths=[4, 6, 28, 2],
                  head_conv=7),
    'smt_l': dict(embed_dims=[96, 192, 384, 768], mlp_ratios=[8, 6, 4, 2], depths=[4, 6, 28, 4],
                  head_conv=7, use_layerscale=True),
}


def randomize(model: torch.nn.Module, generator: torch.Generator) -> None:
  """Overwrites every parameter and buffer that affects eval() outputs (see the docstring)."""
  def normal(shape, std):
    return torch.randn(shape, generator=generator) * std

  def uniform(shape, low, high):
    return low + (high - low) * torch.rand(shape, generator=generator)

  with torch.no_grad():
    for name, tensor in model.state_dict().items():
      leaf = name.rsplit('.', 1)[-1]
      if leaf == 'num_batches_tracked':
        continue
      shape = tensor.shape
      if leaf == 'weight' and tensor.dim() >= 2:
        value = normal(shape, tensor[0].numel() ** -0.5)  # fan in: in/groups x kh x kw
      elif leaf == 'weight':
        value = uniform(shape, 0.75, 1.25)
      elif leaf == 'bias':
        value = normal(shape, 0.1)
      elif leaf.startswith('gamma'):
        value = uniform(shape, 0.5, 1.5)
      elif leaf == 'running_mean':
        value = normal(shape, 0.1)
      elif leaf == 'running_var':
        value = uniform(shape, 0.5, 1.5)
      else:
        raise ValueError(f'{name}: no rule to randomize it')
      tensor.copy_(value)


def stage_outputs(model: torch.nn.Module) -> list:
  """Hooks that collect each stage's normalized output as (B, h, w, C).

  The stage's patch embedding returns its spatial size (h, w) beside the tokens; its
  norm's output is the stage output, (B, h * w, C).
  """
  outputs, sizes = [], []
  for i in range(1, 5):
    getattr(model, f'patch_embed{i}').register_forward_hook(
        lambda module, inputs, output: sizes.append(output[1:]))
    getattr(model, f'norm{i}').register_forward_hook(
        lambda module, inputs, output: outputs.append(
            output.detach().numpy().reshape(output.shape[0], *sizes[len(outputs)], -1)))
  return outputs


def make_case(smt_class, config, input_shape, seed):
  generator = torch.Generator().manual_seed(seed)
  model = smt_class(**config).eval()
  randomize(model, generator)
  arrays = {f'param/{k}': v.numpy().copy() for k, v in model.state_dict().items()}
  images = torch.randn(input_shape, generator=generator)  # float32
  model = model.double()
  outputs = stage_outputs(model)
  with torch.no_grad():
    logits = model(images.double())
  for i, output in enumerate(outputs, start=1):
    arrays[f'stage{i}_nhwc'] = output
  arrays['input_nchw'] = images.numpy()
  arrays['logits'] = logits.numpy()
  params = sum(p.numel() for p in model.parameters())
  return arrays, params


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--official', required=True, help='checkout of github.com/AFeng-x/SMT')
  parser.add_argument('--output_dir', default=os.path.dirname(os.path.abspath(__file__)))
  args = parser.parse_args()
  sys.path.insert(0, args.official)
  from models.smt import SMT  # pylint: disable=import-outside-toplevel

  configs = {}
  for seed, (name, (config, input_shape)) in enumerate(CASES.items()):
    arrays, params = make_case(SMT, config, input_shape, seed)
    np.savez_compressed(os.path.join(args.output_dir, f'{name}.npz'), **arrays)
    configs[name] = {'config': config, 'input_shape_nchw': list(input_shape), 'params': params}
    print(f'{name}: {params:,} parameters, logits {arrays["logits"].ravel()[:3]} ...')
  with open(os.path.join(args.output_dir, 'configs.json'), 'w', encoding='utf-8') as f:
    json.dump(configs, f, indent=1)
    f.write('\n')
  for name, config in VARIANTS.items():
    params = sum(p.numel() for p in SMT(**_COMMON, **config).parameters())
    print(f'{name}: {params:,} parameters')


if __name__ == '__main__':
  main()
