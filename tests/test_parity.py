"""The Flax model computes what the official PyTorch code computes (testdata/official_smt)."""
import jax
import numpy as np
import pytest

from smt_jax.convert import torch_to_flax
from smt_jax.models import SMT
from smt_jax.tools.summary import count_params

TOLERANCE = 1e-4


@pytest.mark.parametrize('ops', ['cpu', 'xla'])
def test_logits_and_stage_maps_match_official(vector, ops):
  model = SMT(**vector.fields, ops=ops)
  variables = torch_to_flax(vector.state_dict, model)
  with jax.default_matmul_precision('highest'):
    logits = jax.jit(model.apply)(variables, vector.images)
    stages = jax.jit(lambda v, x: model.apply(v, x, method='features'))(
        variables, vector.images)
  np.testing.assert_allclose(logits, vector.logits, atol=TOLERANCE, rtol=0)
  assert len(stages) == 4
  for ours, official in zip(stages, vector.stages):
    assert ours.shape == official.shape
    np.testing.assert_allclose(ours, official, atol=TOLERANCE, rtol=0)


def test_parameter_count_matches_official(vector):
  model = SMT(**vector.fields)
  assert count_params(torch_to_flax(vector.state_dict, model)['params']) == vector.num_params
