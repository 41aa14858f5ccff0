"""Invalid settings stop before anything is compiled, with an error naming the field."""
import jax
import pytest

from smt_jax.train import train_and_evaluate
from smt_jax.train import validate
import train_helpers


@pytest.fixture(autouse=True)
def no_compilation(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError('compiled before validating the config')
  monkeypatch.setattr(jax, 'jit', refuse)


@pytest.mark.parametrize('overrides,field', [
    ({'model.name': 'smt_xl'}, 'config.model.name'),
    ({'model.window': 7}, 'config.model has unknown field'),
    ({'model.dtype': 'float17'}, 'config.model.dtype'),
    ({'model.ops': 'fast'}, 'config.model.ops must be one of auto, xla, cpu'),
    ({'batch_size': 12, 'optim.grad_accum_steps': 8}, 'config.batch_size=12'),
    ({'batch_size': 0}, 'config.batch_size=0'),
    ({'mesh.data': 2}, 'config.mesh'),
    ({'mesh.fsdp': 3, 'mesh.data': -1}, 'config.mesh'),
    ({'init_from': '/no/such/weights'}, 'config.init_from'),
    ({'optim.grad_accum_steps': 0}, 'config.optim.grad_accum_steps'),
    ({'checkpoint_every_steps': 0}, 'config.checkpoint_every_steps'),
])
def test_invalid_setting_names_the_field(overrides, field, image_folder, tmp_path):
  config = train_helpers.tiny_config(image_folder, **overrides)
  with pytest.raises(validate.ConfigError) as error:
    train_and_evaluate(config, str(tmp_path))
  assert field in str(error.value)


def test_missing_dataset_is_reported_before_compiling(tmp_path):
  config = train_helpers.tiny_config(str(tmp_path / 'nothing'))
  with pytest.raises(Exception, match='does not exist'):
    train_and_evaluate(config, str(tmp_path / 'run'))


def test_bfloat16_string_becomes_a_dtype(image_folder):
  config = train_helpers.tiny_config(image_folder, **{'model.dtype': 'bfloat16'})
  model = validate.create_model_from_config(config, 4)
  assert model.dtype == jax.numpy.bfloat16 and model.param_dtype == jax.numpy.float32


def test_eval_only_without_checkpoint_or_init_from(image_folder, tmp_path):
  config = train_helpers.tiny_config(image_folder, eval_only=True)
  with pytest.raises(validate.ConfigError, match='config.eval_only'):
    train_and_evaluate(config, str(tmp_path))
