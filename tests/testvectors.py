"""The official-code test vectors, kept in the repository (see testdata/official_smt/README.md)."""
import json
import pathlib

import numpy as np

TESTVECTORS = pathlib.Path(__file__).resolve().parent / 'testdata' / 'official_smt'
CASES = ('smt_micro_a', 'smt_micro_b', 'smt_micro_c')


class Vector:
  """One official-code output file: model fields, input, outputs and state_dict."""

  def __init__(self, name):
    config = json.loads((TESTVECTORS / 'configs.json').read_text())[name]
    self.name = name
    self.fields = {k: tuple(v) if isinstance(v, list) else v
                   for k, v in config['config'].items()}
    self.num_params = config['params']
    with np.load(TESTVECTORS / f'{name}.npz', allow_pickle=False) as data:
      arrays = {k: data[k] for k in data.files}
    self.images = arrays['input_nchw'].transpose(0, 2, 3, 1)
    self.logits = arrays['logits']
    self.stages = [arrays[f'stage{i}_nhwc'] for i in range(1, 5)]
    self.state_dict = {k[len('param/'):]: v for k, v in arrays.items()
                       if k.startswith('param/')}
