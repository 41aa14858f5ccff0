"""The ADE20K recipe: poly_schedule against mmcv's PolyLrUpdaterHook loop, and the config."""
import importlib

import numpy as np
import pytest

from smt_jax.data import seg_augment
from smt_jax.train import optim
from smt_jax.train import validate


def mmcv_rates(base_lr, max_iters, warmup_iters, warmup_ratio, power, min_lr, iters):
  """The rate mmcv's PolyLrUpdaterHook (by_epoch=False, warmup='linear') sets before each
  iteration: get_regular_lr, then get_warmup_lr while cur_iter < warmup_iters."""
  rates = []
  for cur_iter in iters:
    regular = (base_lr - min_lr) * (1 - cur_iter / max_iters) ** power + min_lr
    if cur_iter >= warmup_iters:
      rates.append(regular)
    else:
      k = (1 - cur_iter / warmup_iters) * (1 - warmup_ratio)
      rates.append(regular * (1 - k))
  return np.array(rates)


@pytest.mark.parametrize('power,min_lr', [(1.0, 0.0), (0.9, 1e-4)])
def test_poly_schedule_is_mmcv(power, min_lr):
  iters = [0, 1, 2, 749, 1499, 1500, 1501, 80_000, 159_998, 159_999]
  schedule = optim.poly_schedule(6e-5, 160_000, 1500, 1e-6, power, min_lr)
  got = np.array([schedule(i) for i in iters])
  np.testing.assert_allclose(got, mmcv_rates(6e-5, 160_000, 1500, 1e-6, power, min_lr, iters),
                             rtol=1e-5, atol=0)


def test_poly_schedule_by_hand():
  schedule = optim.poly_schedule(6e-5, 160_000, 1500, 1e-6)
  assert float(schedule(0)) == pytest.approx(6e-5 * 1e-6)  # warmup starts at base x ratio
  # iteration 750: poly 6e-5 * (1 - 750/160000), warmup factor 1 - 0.5 * (1 - 1e-6)
  assert float(schedule(750)) == pytest.approx(6e-5 * (1 - 750 / 160_000) * (0.5 + 0.5e-6))
  assert float(schedule(1500)) == pytest.approx(6e-5 * (1 - 1500 / 160_000))
  assert float(schedule(160_000)) == 0.0


@pytest.mark.parametrize('name', ['upernet_smt_s_ade20k', 'upernet_demo'])
def test_segmentation_recipes_are_valid(name):
  module = importlib.import_module(f'configs.{name}')
  assert 'python -m smt_jax.main --config=configs/' + name + '.py' in module.__doc__
  config = module.get_config()
  assert config.task == 'segmentation'
  validate.check_config(config)


def test_recipe_config():
  config = importlib.import_module('configs.upernet_smt_s_ade20k').get_config()
  assert (config.optim.base_lr, config.optim.weight_decay) == (6e-5, 0.01)
  assert (config.optim.b1, config.optim.b2) == (0.9, 0.999)
  assert (config.optim.warmup_steps, config.optim.warmup_ratio) == (1500, 1e-6)
  assert (config.optim.power, config.optim.min_lr) == (1.0, 0.0)
  assert (config.batch_size, config.num_train_steps) == (16, 160_000)
  assert (config.loss.decode_weight, config.loss.aux_weight) == (1.0, 0.4)
  assert (config.model.name, config.model.drop_path_rate) == ('smt_s', 0.2)
  assert (config.head.channels, config.head.aux_channels, config.head.dropout) == (512, 256, 0.1)
  assert (config.dataset, config.eval.mode) == ('ade20k', 'whole')
  rng = np.random.default_rng(0)
  image, label = seg_augment.train_example(
      rng.integers(0, 256, (64, 80, 3), dtype=np.uint8), np.zeros((64, 80), np.uint8), rng,
      config.aug)
  assert image.shape == (512, 512, 3) and label.shape == (512, 512)
