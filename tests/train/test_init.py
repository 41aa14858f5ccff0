"""init_from with another number of classes: ImageNet-22K -> 1K keeps the 1K rows of the head."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smt_jax import labels
from smt_jax import weights
from smt_jax.train import init as init_lib
from smt_jax.train import sharding
from smt_jax.train import validate
import train_helpers

TEDDY_BEAR = 850  # the one 1K class without a 22K synset of its own


def test_imagenet22k_rows_of_1k():
  rows = labels.imagenet22k_rows_of_1k()
  assert rows.shape == (1000,) and len(set(rows.tolist())) == 1000
  assert rows.min() >= 0 and rows.max() < labels.IMAGENET_22K_CLASSES
  assert not {9205, 15027} & set(rows.tolist())  # the last two 22K synsets' labels
  # Both class lists are sorted, so the rows rise, except the teddy bear's stand-in.
  others = np.delete(rows, TEDDY_BEAR)
  assert (np.diff(others) > 0).all()
  assert not others[TEDDY_BEAR - 1] < rows[TEDDY_BEAR] < others[TEDDY_BEAR]
  assert 'teddy' in labels.imagenet_class_names()[TEDDY_BEAR]


def _initial_variables(config, num_classes):
  """Through the training code's own path: initial_variables on a one-device mesh."""
  model = validate.create_model_from_config(config, num_classes)
  shardings = sharding.tree_shardings(init_lib.abstract_variables(model),
                                      sharding.create_mesh(config.mesh))
  state_shardings = types.SimpleNamespace(params=shardings['params'],
                                          batch_stats=shardings['batch_stats'])
  return jax.device_get(init_lib.initial_variables(model, config, state_shardings))


def _without_head(variables):
  return {**variables, 'params': {k: v for k, v in variables['params'].items() if k != 'head'}}


@pytest.fixture(scope='module')
def weights_22k(tmp_path_factory):
  """A tiny SMT with a 21,841-class head (random bias, so that rows can be told apart)."""
  config = train_helpers.tiny_config('unused')
  model = validate.create_model_from_config(config, labels.IMAGENET_22K_CLASSES)
  variables = jax.device_get(model.init(jax.random.key(1), jnp.zeros((1, 32, 32, 3))))
  head = variables['params']['head']
  head['bias'] = np.random.default_rng(0).normal(size=head['bias'].shape).astype(np.float32)
  path = str(tmp_path_factory.mktemp('weights') / 'smt_22k')
  weights.save(path, variables, model)
  return path, variables


def test_22k_to_1k_keeps_the_rows_of_the_1k_classes(weights_22k):
  path, saved = weights_22k
  config = train_helpers.tiny_config('unused', init_from=path)
  variables = _initial_variables(config, 1000)
  rows = labels.imagenet22k_rows_of_1k()
  head = variables['params']['head']
  np.testing.assert_array_equal(head['kernel'], saved['params']['head']['kernel'][:, rows])
  np.testing.assert_array_equal(head['bias'], saved['params']['head']['bias'][rows])
  train_helpers.assert_trees_equal(_without_head(variables), _without_head(saved))


def test_22k_to_other_classes_starts_a_new_head(weights_22k):
  path, saved = weights_22k
  fresh = _initial_variables(train_helpers.tiny_config('unused'), 10)
  variables = _initial_variables(train_helpers.tiny_config('unused', init_from=path), 10)
  train_helpers.assert_trees_equal(variables['params']['head'], fresh['params']['head'])
  train_helpers.assert_trees_equal(_without_head(variables), _without_head(saved))
