"""Checkpointer on a small tree: checksums catch arrays that read back with other values."""
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from smt_jax.train import checkpointing
from smt_jax.train import fingerprint


def test_checksum_changes_with_any_value_or_order():
  x = jnp.arange(12, dtype=jnp.float32).reshape(3, 4)
  base = fingerprint.fingerprints({'x': x})['x']
  swapped = x.at[0, 0].set(x[0, 1]).at[0, 1].set(x[0, 0])
  assert fingerprint.fingerprints({'x': swapped})['x'] != base
  assert fingerprint.fingerprints({'x': x.at[2, 3].add(1e-6)})['x'] != base
  assert fingerprint.fingerprints({'x': x + 0})['x'] == base


def _single_device(tree):
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def test_arrays_that_restore_with_other_values_are_damaged(tmp_path, caplog):
  states = {step: {'w': jnp.full((4, 3), float(step)), 'b': jnp.arange(3) + step}
            for step in (1, 2)}
  saver = checkpointing.Checkpointer(str(tmp_path), keep=3, asynchronous=False)
  for step, state in states.items():
    saver.save(step, state, {'position': step})
  saver.close()
  # Step 2's array files replaced by step 1's: every file is intact, the numbers are not.
  root = tmp_path / 'checkpoints'
  shutil.rmtree(root / '2' / 'state')
  shutil.copytree(root / '1' / 'state', root / '2' / 'state')

  restorer = checkpointing.Checkpointer(str(tmp_path))
  with caplog.at_level(logging.WARNING):
    step, state, data_state = restorer.restore_latest(_single_device(states[1]))
  restorer.close()
  assert step == 1 and data_state == {'position': 1}
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state), jax.device_get(states[1]))
  assert os.listdir(root / 'damaged') == ['2']
  assert sorted(os.listdir(root)) == ['1', 'damaged']
  assert restorer.manager.all_steps() == [1]
  reports = [r.getMessage() for r in caplog.records if 'is damaged' in r.getMessage()]
  assert reports == [
      f'Checkpoint step 2 in {root} is damaged (b: its values differ from those saved '
      f'(checksum mismatch; 1 more array too)); moved it to {root}/damaged/2 and resumed '
      'from step 1.']
