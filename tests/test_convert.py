"""Official state_dict <-> Flax conversion: strict, safe, and the command line."""
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
import safetensors.numpy
import torch

from smt_jax import convert, weights
from smt_jax.models import SMT, abstract_variables, create_model
from testvectors import Vector

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_round_trip_is_identity(vector):
  model = SMT(**vector.fields)
  back = convert.flax_to_torch(convert.torch_to_flax(vector.state_dict, model))
  assert sorted(back) == sorted(vector.state_dict)
  for key, value in vector.state_dict.items():
    assert back[key].dtype == value.dtype, key
    np.testing.assert_array_equal(back[key], value, err_msg=key)


def test_accepts_torch_tensors(vector):
  model = SMT(**vector.fields)
  tensors = {k: torch.from_numpy(v) for k, v in vector.state_dict.items()}
  ours = convert.torch_to_flax(tensors, model)
  ref = convert.torch_to_flax(vector.state_dict, model)
  jax.tree.map(np.testing.assert_array_equal, ours, ref)


@pytest.fixture(name='micro')
def micro_fixture():
  vector = Vector('smt_micro_a')
  return SMT(**vector.fields), dict(vector.state_dict)


def test_every_problem_is_named_in_one_error(micro):
  model, state_dict = micro
  del state_dict['block3.1.attn.kv.weight']
  del state_dict['norm4.bias']
  state_dict['block3.1.attn.dw_conv.weight'] = np.zeros((64, 1, 3, 3), np.float32)
  state_dict['block1.0.attn.local_conv_2.weight'] = np.zeros((4, 1, 3, 3), np.float32)
  with pytest.raises(convert.CheckpointMismatchError) as error:
    convert.torch_to_flax(state_dict, model)
  message = str(error.value)
  assert 'Missing keys (2)' in message
  assert 'block3.1.attn.kv.weight: expected (128, 64)' in message
  assert 'norm4.bias: expected (128,)' in message
  assert 'Unexpected keys (1)' in message
  assert 'block3.1.attn.dw_conv.weight: (64, 1, 3, 3)' in message
  assert 'Wrong shapes (1)' in message
  assert ('block1.0.attn.local_conv_2.weight: expected (4, 1, 5, 5), found (4, 1, 3, 3)'
          in message)


def test_other_class_count_needs_an_explicit_choice(micro):
  model, state_dict = micro
  model = model.clone(num_classes=3)
  with pytest.raises(convert.CheckpointMismatchError, match='10-class head.*num_classes=10'):
    convert.torch_to_flax(state_dict, model)
  variables = convert.torch_to_flax(state_dict, model, head='reset',
                                    rng=jax.random.PRNGKey(0))
  assert variables['params']['head']['kernel'].shape == (128, 3)
  np.testing.assert_array_equal(variables['params']['norm4']['scale'],
                                state_dict['norm4.weight'])
  with pytest.raises(ValueError, match='needs rng'):
    convert.torch_to_flax(state_dict, model, head='reset')


def test_reset_head_for_a_headless_backbone(micro):
  model, state_dict = micro
  with pytest.raises(convert.CheckpointMismatchError, match='head.weight'):
    convert.torch_to_flax(state_dict, model.clone(num_classes=0))
  variables = convert.torch_to_flax(state_dict, model.clone(num_classes=0), head='reset')
  assert 'head' not in variables['params']


def test_imagenet_22k_head_is_named(micro):
  model, state_dict = micro
  state_dict['head.weight'] = np.zeros((convert.IMAGENET_22K_CLASSES, 128), np.float32)
  state_dict['head.bias'] = np.zeros((convert.IMAGENET_22K_CLASSES,), np.float32)
  with pytest.raises(convert.CheckpointMismatchError, match='ImageNet-22K head'):
    convert.torch_to_flax(state_dict, model)
  variables = convert.torch_to_flax(state_dict,
                                    model.clone(num_classes=convert.IMAGENET_22K_CLASSES))
  assert variables['params']['head']['bias'].shape == (convert.IMAGENET_22K_CLASSES,)


def test_reads_safetensors_npz_and_prefixed_keys(micro, tmp_path):
  _, state_dict = micro
  safetensors.numpy.save_file(state_dict, tmp_path / 'w.safetensors')
  np.savez(tmp_path / 'w.npz', **{'module.' + k: v for k, v in state_dict.items()})
  for loaded in (convert.load_state_dict(str(tmp_path / 'w.safetensors')),
                 convert.load_state_dict(str(tmp_path / 'w.npz'), prefix='module.')):
    assert sorted(loaded) == sorted(state_dict)
    np.testing.assert_array_equal(loaded['head.weight'], state_dict['head.weight'])
  with pytest.raises(ValueError, match="prefix 'backbone.'"):
    convert.load_state_dict(str(tmp_path / 'w.npz'), prefix='backbone.')


class _Payload:
  """Stands for arbitrary pickled code: unpickling it would call os.system."""

  def __reduce__(self):
    return (os.system, ('echo pwned',))


def test_pickled_code_is_refused(tmp_path):
  path = tmp_path / 'evil.pth'
  torch.save({'model': {'x': torch.zeros(1)}, 'extra': _Payload()}, path)
  with pytest.raises(ValueError, match='refusing to unpickle'):
    convert.load_state_dict(str(path))
  legacy = tmp_path / 'legacy.pth'
  torch.save({'x': torch.zeros(1)}, legacy, _use_new_zipfile_serialization=False)
  with pytest.raises(ValueError, match='legacy pickle files are refused'):
    convert.load_state_dict(str(legacy))
  with pytest.raises(ValueError, match='Unsupported checkpoint format'):
    convert.load_state_dict(str(_touch(tmp_path / 'w.ckpt')))


def _touch(path):
  path.write_bytes(b'')
  return path


def _run_cli(*args):
  return subprocess.run([sys.executable, '-m', 'smt_jax.convert', *args], cwd=REPO,
                        capture_output=True, text=True, check=False)


def test_command_line_converts_a_torch_checkpoint(tmp_path):
  model = create_model('smt_t')
  rng = np.random.default_rng(3)
  variables = jax.tree.map(lambda a: rng.normal(size=a.shape).astype(a.dtype),
                           abstract_variables(model))
  state_dict = convert.flax_to_torch(variables)
  torch.save({'model': {k: torch.from_numpy(v) for k, v in state_dict.items()}, 'epoch': 299},
             tmp_path / 'smt_tiny.pth')
  out = tmp_path / 'converted'
  result = _run_cli(f'--checkpoint={tmp_path / "smt_tiny.pth"}', '--model=smt_t',
                    f'--output_dir={out}')
  assert result.returncode == 0, result.stderr
  assert '11,506,536 parameters' in result.stdout
  restored_model, restored = weights.load(str(out))
  assert restored_model.embed_dims == model.embed_dims
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), variables)


def test_command_line_stops_on_mismatch_and_writes_nothing(micro, tmp_path):
  _, state_dict = micro
  torch.save({k: torch.from_numpy(v) for k, v in state_dict.items()}, tmp_path / 'micro.pth')
  out = tmp_path / 'converted'
  result = _run_cli(f'--checkpoint={tmp_path / "micro.pth"}', '--model=smt_t',
                    f'--output_dir={out}')
  assert result.returncode != 0
  assert 'Conversion stopped; nothing was written.' in result.stderr
  assert 'Wrong shapes' in result.stderr and 'block3.7.attn.q.weight' in result.stderr
  assert not out.exists()
