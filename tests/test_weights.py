"""The weights checkpoint (orbax) restores a model and its variables without training code."""
import jax
import numpy as np
import pytest

from testvectors import Vector
from smt_jax import weights
from smt_jax.convert import torch_to_flax
from smt_jax.models import SMT


def test_save_then_load_gives_the_same_model_and_outputs(tmp_path):
  vector = Vector('smt_micro_b')  # layer scale on, 7 classes, non-default widths
  model = SMT(**vector.fields)
  variables = torch_to_flax(vector.state_dict, model)
  weights.save(str(tmp_path / 'w'), variables, model)
  restored_model, restored = weights.load(str(tmp_path / 'w'), ops='xla')
  assert restored_model.clone(ops='auto') == model
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), variables)
  np.testing.assert_allclose(jax.jit(restored_model.apply)(restored, vector.images),
                             jax.jit(model.apply)(variables, vector.images), atol=1e-5)


@pytest.mark.parametrize('make,problem', [
    (lambda d: None, 'does not exist'),
    (lambda d: d.write_text('x'), 'is a file'),
    (lambda d: (d / 'checkpoints' / '8').mkdir(parents=True), 'is a training workdir'),
    (lambda d: (d / 'model').mkdir(parents=True), 'has no `variables` item'),
    (lambda d: d.mkdir(), 'has no `variables` or `model` item')])
def test_a_path_without_weights_gets_one_message_naming_the_commands(tmp_path, make, problem):
  path = tmp_path / 'w'
  make(path)
  with pytest.raises(weights.WeightsError) as error:
    weights.load(str(path))
  message = str(error.value)
  assert message.startswith(f'The weights checkpoint {path} {problem}'), message
  assert ('; expected a weights checkpoint directory holding the orbax items `variables` and '
          '`model`. Make one with') in message
  assert 'python -m smt_jax.convert' in message and 'python -m smt_jax.tools.export' in message
