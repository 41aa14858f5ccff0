"""Writes reference.npz with Hugging Face transformers' UperNet heads (PyTorch).

See README.md here for the environment and the command. The heads are built from a small
`UperNetConfig` (hidden size 16, pool scales 1/2/3/6, 5 classes; auxiliary head on the
third map with 12 channels), then every weight and BatchNorm statistic is overwritten with
random values: conv weights normal with standard deviation 1/sqrt(fan in), BatchNorm scales
uniform in [0.5, 1.5], running variances uniform in [0.5, 2.0], every other float normal
with standard deviation 0.3. Features are float32 normal, NHWC, batch 2.

For each case of CASES: the features and both heads' eval-mode logits (NHWC). For
'uneven_bins' also the decode head's logits in training mode (batch statistics) and its
state_dict after that forward pass (updated running statistics).
"""
import argparse
import os

import numpy as np
import torch
from transformers import UperNetConfig
from transformers.models.upernet.modeling_upernet import UperNetFCNHead, UperNetHead

IN_CHANNELS = (8, 16, 24, 32)
CHANNELS, AUX_CHANNELS, CLASSES = 16, 12, 5
# Stage-map sizes (H, W) at strides 4, 8, 16, 32 of non-square images whose sides are not
# multiples of 32 * 6, so the pyramid's pooling bins are uneven; in the second the 6x6
# pooled map is larger than the stage-4 map and is shrunk back.
CASES = {
    'uneven_bins': ((58, 83), (29, 42), (15, 21), (8, 11)),
    'stage4_below_6': ((18, 14), (9, 7), (5, 4), (3, 2)),
}


def heads():
  torch.manual_seed(0)
  config = UperNetConfig(hidden_size=CHANNELS, pool_scales=[1, 2, 3, 6], num_labels=CLASSES,
                         auxiliary_in_channels=IN_CHANNELS[2],
                         auxiliary_channels=AUX_CHANNELS)
  decode = UperNetHead(config, in_channels=list(IN_CHANNELS))
  aux = UperNetFCNHead(config)
  with torch.no_grad():
    for head in (decode, aux):
      for name, tensor in head.state_dict().items():
        if name.endswith('running_var'):
          tensor.uniform_(0.5, 2.0)
        elif name.endswith('batch_norm.weight'):
          tensor.uniform_(0.5, 1.5)
        elif tensor.dim() == 4:
          tensor.normal_(0.0, tensor[0].numel() ** -0.5)
        elif tensor.is_floating_point():
          tensor.normal_(0.0, 0.3)
  return decode, aux


def run(head, features):
  nchw = [torch.from_numpy(f).permute(0, 3, 1, 2) for f in features]
  with torch.no_grad():
    return head(nchw).permute(0, 2, 3, 1).numpy()


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--output', default=os.path.join(os.path.dirname(
      os.path.abspath(__file__)), 'reference.npz'))
  args = parser.parse_args()
  decode, aux = heads()
  decode.eval()
  aux.eval()
  arrays = {f'decode/{k}': v.numpy().copy() for k, v in decode.state_dict().items()}
  arrays.update({f'aux/{k}': v.numpy().copy() for k, v in aux.state_dict().items()})
  rng = np.random.default_rng(0)
  features = {}
  for case, sizes in CASES.items():
    features[case] = [rng.standard_normal((2, h, w, c)).astype(np.float32)
                      for (h, w), c in zip(sizes, IN_CHANNELS)]
    for i, f in enumerate(features[case]):
      arrays[f'{case}/features_{i}'] = f
    arrays[f'{case}/decode_logits'] = run(decode, features[case])
    arrays[f'{case}/aux_logits'] = run(aux, features[case])
  # Last, as it updates the running statistics.
  decode.train()
  arrays['uneven_bins/decode_train_logits'] = run(decode, features['uneven_bins'])
  arrays.update({f'decode_trained/{k}': v.numpy().copy() for k, v in decode.state_dict().items()})
  np.savez_compressed(args.output, **arrays)
  print(f'wrote {len(arrays)} arrays to {args.output}')


if __name__ == '__main__':
  main()
