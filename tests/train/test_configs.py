"""Every recipe in configs/ is valid and builds its model; the demo runs a few real steps."""
import importlib
import os

import pytest

from smt_jax.models import abstract_variables
from smt_jax.train import digits
from smt_jax.train import train_and_evaluate
from smt_jax.train import validate
import train_helpers

RECIPES = ('smt_t', 'smt_s', 'smt_b', 'smt_l', 'smt_l_22k', 'smt_l_224_ft', 'smt_l_384_ft',
           'finetune_folder', 'demo')


@pytest.mark.parametrize('name', RECIPES)
def test_recipe_is_valid(name):
  module = importlib.import_module(f'configs.{name}')
  assert 'python -m smt_jax.main --config=configs/' + name + '.py' in module.__doc__
  config = module.get_config()
  validate.check_config(config)
  model = validate.create_model_from_config(config, 10)
  shapes = abstract_variables(model)
  assert shapes['params']['head']['kernel'].shape[-1] == 10


def test_demo_runs_a_few_steps_on_the_digits(tmp_path):
  config = importlib.import_module('configs.demo').get_config()
  config.num_train_steps = 4
  config.model.ops = 'xla'  # compiles faster; the demo's own choice is 'auto'
  _, metrics = train_and_evaluate(config, str(tmp_path))
  data_dir = tmp_path / 'data'
  assert sorted(os.listdir(data_dir / 'train')) == [str(d) for d in range(10)]
  assert metrics['eval/num_examples'] == 304  # 1 in 6 of each digit's images held out
  assert 0 <= metrics['eval/top1'] <= 1
  assert train_helpers.checkpoint_steps(str(tmp_path)) == [4]
  assert train_helpers.scalars(str(tmp_path), 'train/loss')
  # Written once: a second call finds the folder complete and leaves it alone.
  stamp = os.path.getmtime(data_dir / '.complete')
  digits.write_folder(str(data_dir))
  assert os.path.getmtime(data_dir / '.complete') == stamp
