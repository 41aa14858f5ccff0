"""`config.init_from` given a release name: training starts from the downloaded weights."""
import jax
import numpy as np
import pytest

from smt_jax import convert
from smt_jax import pretrained
from smt_jax.models import create_model
from smt_jax.train import train_and_evaluate
from smt_jax.train import validate
import train_helpers


def _smt_t_config(image_folder, init_from):
  config = train_helpers.tiny_config(image_folder, eval_only=True, init_from=init_from)
  del config.model['embed_dims'], config.model['depths']  # the real SMT-T
  return config


def test_init_from_a_release_name(release_server, release_file, image_folder, tmp_path):
  state, metrics = train_and_evaluate(_smt_t_config(image_folder, 'smt_t'), str(tmp_path / 'run'))
  assert metrics['eval/num_examples'] == 16
  assert release_server.ranges == [None]
  expected = convert.torch_to_flax(convert.load_state_dict(str(release_file)),
                                   create_model('smt_t'))
  params = jax.device_get(state.params)
  assert params['head']['kernel'].shape == (512, 4)  # 4 classes: a new head
  del params['head'], expected['params']['head']
  jax.tree.map(np.testing.assert_array_equal, params, expected['params'])


def test_init_from_an_unavailable_release_stops_with_its_url(release_server, image_folder,
                                                              tmp_path):
  config = _smt_t_config(image_folder, 'smt_s')  # fails before the model would be checked
  with pytest.raises(pretrained.PretrainedError, match='smt_small.pth answered HTTP 404'):
    train_and_evaluate(config, str(tmp_path / 'run'))


def test_init_from_neither_name_nor_directory_lists_the_names(image_folder):
  config = train_helpers.tiny_config(image_folder, init_from='smt_tiny')
  with pytest.raises(validate.ConfigError, match=r"config.init_from='smt_tiny' is neither a "
                     r'pretrained name \(smt_t, smt_s, smt_b, '):
    validate.check_config(config)
