"""Mesh shapes from the config and partition rules (the 8-device run is test_multidevice)."""
import jax
import ml_collections
import pytest
from jax.sharding import PartitionSpec as P

from smt_jax.train import sharding


def _mesh(data, fsdp):
  return ml_collections.ConfigDict({'data': data, 'fsdp': fsdp})


@pytest.mark.parametrize('data,fsdp,devices,shape', [
    (-1, 1, 8, (8, 1)), (2, -1, 8, (2, 4)), (-1, 8, 8, (1, 8)), (4, 2, 8, (4, 2)),
    (-1, 1, 1, (1, 1))])
def test_mesh_shape(data, fsdp, devices, shape):
  assert sharding.mesh_shape(_mesh(data, fsdp), devices) == shape


@pytest.mark.parametrize('data,fsdp,devices', [(3, -1, 8), (4, 4, 8), (-1, -1, 8), (0, 1, 1)])
def test_mesh_that_does_not_fit_is_refused(data, fsdp, devices):
  with pytest.raises(ValueError, match='config.mesh'):
    sharding.mesh_shape(_mesh(data, fsdp), devices)


def test_fsdp_rule_splits_the_largest_divisible_axis_of_large_tensors():
  rules = sharding.DEFAULT_RULES
  assert sharding.spec_for('params/block3_1/attn/kv/kernel', (256, 512), rules, 4, 1024) == \
      P(None, 'fsdp')
  assert sharding.spec_for('params/head/kernel', (512, 1000), rules, 16, 1024) == \
      P('fsdp', None)  # 1000 is not divisible by 16, 512 is
  assert sharding.spec_for('params/norm4/scale', (512,), rules, 4, 1024) == P()
  assert sharding.spec_for('step', (), rules, 4, 1024) == P()
  assert sharding.spec_for('params/x', (4096,), rules, 1, 1024) == P()


def test_rules_match_in_order():
  rules = (('.*/head/.*', 'replicate'), ('params/.*kernel', (None, 'data')), ('.*', 'fsdp'))
  assert sharding.spec_for('params/head/kernel', (512, 1024), rules, 4, 1) == P()
  assert sharding.spec_for('params/a/kernel', (8, 8), rules, 4, 1) == P(None, 'data')
  assert sharding.spec_for('params/a/bias', (8,), rules, 4, 1) == P('fsdp')
  with pytest.raises(ValueError, match='Partition rule'):
    sharding.spec_for('params/a/kernel', (8, 8, 8), rules, 4, 1)


def test_tree_shardings_on_one_device():
  mesh = sharding.create_mesh(_mesh(-1, 1))
  tree = {'params': {'w': jax.ShapeDtypeStruct((64, 64), 'float32')}}
  shardings = sharding.tree_shardings(tree, mesh)
  assert shardings['params']['w'].spec == P()
  assert sharding.batch_sharding(mesh).spec == P(('data', 'fsdp'))
