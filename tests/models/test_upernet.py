"""The UPerNet heads compute what Hugging Face transformers' UperNetHead and UperNetFCNHead
(PyTorch, written after mmseg's) compute, with their weights converted by
`smt_jax.convert.upernet_to_flax`; BatchNorm's training statistics follow PyTorch too.

The transformers side is reference data made once by
testdata/upernet_transformers/make_reference.py (see its README)."""
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from smt_jax.convert import CheckpointMismatchError, upernet_to_flax
from smt_jax.models import SMT, abstract_variables
from smt_jax.models.upernet import FCNHead, UPerHead, UPerNet, adaptive_avg_pool

HERE = pathlib.Path(__file__).parent
REFERENCE = HERE.parent / 'testdata' / 'upernet_transformers' / 'reference.npz'
TOLERANCE = 1e-4
CHANNELS, AUX_CHANNELS, CLASSES = 16, 12, 5
CASES = ('uneven_bins', 'stage4_below_6')


@pytest.fixture(scope='module')
def reference():
  with np.load(REFERENCE, allow_pickle=False) as data:
    return {k: data[k] for k in data.files}


def state_dict(reference, prefix):
  """The transformers state_dict stored under `prefix/` (decode, aux or decode_trained)."""
  return {k[len(prefix) + 1:]: v for k, v in reference.items() if k.startswith(prefix + '/')}


def features(reference, case):
  return [reference[f'{case}/features_{i}'] for i in range(4)]


def abstract(head, feats):
  """The head's variables as shapes, the tree `upernet_to_flax` fills."""
  return jax.eval_shape(lambda: head.init(jax.random.key(0), feats))


def flax_variables(head, torch_state_dict, feats):
  return upernet_to_flax(torch_state_dict, abstract(head, feats), '')


def test_adaptive_avg_pool_matches_torch():
  x = np.random.default_rng(1).standard_normal((2, 11, 7, 3)).astype(np.float32)
  for size in (1, 2, 3, 6, 9):
    expected = torch.nn.AdaptiveAvgPool2d(size)(torch.from_numpy(x).permute(0, 3, 1, 2))
    np.testing.assert_allclose(adaptive_avg_pool(jnp.asarray(x), size),
                               expected.permute(0, 2, 3, 1).numpy(), atol=1e-6, rtol=0)


@pytest.mark.parametrize('case', CASES)
def test_eval_logits_match_transformers(reference, case):
  feats = features(reference, case)
  ours = UPerHead(CLASSES, CHANNELS)
  ours_aux = FCNHead(CLASSES, AUX_CHANNELS)
  with jax.default_matmul_precision('highest'):
    logits = ours.apply(flax_variables(ours, state_dict(reference, 'decode'), feats), feats)
    aux_logits = ours_aux.apply(
        flax_variables(ours_aux, state_dict(reference, 'aux'), feats), feats)
  assert logits.shape == (2, *feats[0].shape[1:3], CLASSES)
  assert aux_logits.shape == (2, *feats[2].shape[1:3], CLASSES)
  np.testing.assert_allclose(logits, reference[f'{case}/decode_logits'], atol=TOLERANCE,
                             rtol=0)
  np.testing.assert_allclose(aux_logits, reference[f'{case}/aux_logits'], atol=TOLERANCE,
                             rtol=0)


def test_training_batch_statistics_match_transformers(reference):
  """In training both normalize with the batch's statistics and update the running ones
  alike (momentum 0.1, unbiased running variance, num_batches_tracked). transformers' heads
  have no dropout, so ours runs with none here."""
  feats = features(reference, 'uneven_bins')
  ours = UPerHead(CLASSES, CHANNELS, dropout=0.0)
  variables = flax_variables(ours, state_dict(reference, 'decode'), feats)
  with jax.default_matmul_precision('highest'):
    logits, updates = ours.apply(variables, feats, train=True, mutable=['batch_stats'])
  np.testing.assert_allclose(logits, reference['uneven_bins/decode_train_logits'],
                             atol=TOLERANCE, rtol=0)
  expected = flax_variables(ours, state_dict(reference, 'decode_trained'), feats)
  want = dict(jax.tree_util.tree_leaves_with_path(expected['batch_stats']))
  for path, value in jax.tree_util.tree_leaves_with_path(updates['batch_stats']):
    np.testing.assert_allclose(value, want[path], atol=1e-5, rtol=1e-5, err_msg=str(path))


def test_converter_takes_mmseg_names_and_names_every_bad_key(reference):
  given = state_dict(reference, 'decode')
  feats = features(reference, 'stage4_below_6')
  ours = UPerHead(CLASSES, CHANNELS)
  shapes = abstract(ours, feats)
  mmseg = {'decode_head.' + k.replace('batch_norm', 'bn').replace('classifier', 'conv_seg'): v
           for k, v in given.items()}
  mmseg['auxiliary_head.conv_seg.weight'] = torch.zeros(1)  # another head's key: ignored
  from_mmseg = upernet_to_flax(mmseg, shapes, 'decode_head.')
  from_transformers = upernet_to_flax(given, shapes, '')
  jax.tree.map(np.testing.assert_array_equal, from_mmseg, from_transformers)
  assert from_mmseg['params']['psp_modules_3']['conv']['kernel'].shape == (1, 1, 32, CHANNELS)

  del mmseg['decode_head.fpn_convs.1.bn.running_var']
  mmseg['decode_head.conv_seg.weight'] = torch.zeros(CLASSES + 1, CHANNELS, 1, 1)
  mmseg['decode_head.extra.weight'] = torch.zeros(3)
  with pytest.raises(CheckpointMismatchError) as error:
    upernet_to_flax(mmseg, shapes, 'decode_head.')
  message = str(error.value)
  for expected in ('fpn_convs.1.bn.running_var: expected (16,)', 'extra.weight: (3,)',
                   'conv_seg.weight: expected (5, 16, 1, 1), found (6, 16, 1, 1)'):
    assert expected in message


def test_upernet_on_smt_gives_stride_4_and_16_logits_for_odd_sizes():
  backbone = SMT(embed_dims=(8, 16, 24, 32), depths=(1, 1, 2, 1), num_classes=0)
  model = UPerNet(backbone, CLASSES, channels=CHANNELS, aux_channels=AUX_CHANNELS)
  images = jax.ShapeDtypeStruct((1, 97, 75, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), images)
  assert set(variables['params']) == {'backbone', 'decode_head', 'auxiliary_head'}
  # The backbone's tree is the classifier's without the head: torch_to_flax converts it.
  assert (jax.tree.structure(variables['params']['backbone'])
          == jax.tree.structure(abstract_variables(backbone)['params']))
  logits, aux = jax.eval_shape(model.apply, variables, images)
  # SMT's maps: 97x75 -> stem 49x38 -> 24x19 (stride 4), 12x10, 6x5 (stride 16), 3x3.
  assert logits.shape == (1, 24, 19, CLASSES)
  assert aux.shape == (1, 6, 5, CLASSES)


def test_training_on_8_devices_with_a_sharded_batch_equals_one_device():
  """Under jit with the batch sharded, BatchNorm's statistics are the global batch's (what
  SyncBN gives in PyTorch), so the logits and running statistics equal one device's."""
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu'}
  worker = subprocess.run([sys.executable, str(HERE / 'upernet_sharded_worker.py')],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
  assert worker.returncode == 0, worker.stderr[-3000:]
  result = json.loads(worker.stdout.strip().splitlines()[-1])
  assert result['devices'] == 8 and result['logit_shards'] == 8
  assert result['logits_diff'] < 1e-5 and result['stats_diff'] < 1e-5, result
