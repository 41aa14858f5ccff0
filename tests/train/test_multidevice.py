"""8 simulated CPU devices on a data=2 x fsdp=4 mesh against the 1-device reference run.

Same config, same data stream (one process), same random numbers (threefry does not depend
on the sharding); only the order of floating-point reductions differs. Measured: the
per-step losses agree to about 1e-6 relative; the test allows 1e-4.
"""
import json
import subprocess
import sys

import numpy as np

import train_helpers

CHILD = '''
import json, sys
import jax
import numpy as np
from smt_jax.train import train_and_evaluate, validate
import train_helpers

config = train_helpers.tiny_config(sys.argv[1], checkpoint_every_steps=20,
                                   **{'mesh.data': 2, 'mesh.fsdp': 4})
# The CPU op set, what 'auto' picks here: XLA's SPMD partitioner splits the stock grouped
# 1x1 conv of SAA wrongly on simulated CPU devices (docs/ops.md).
config.model.ops = 'cpu'
bad = train_helpers.tiny_config(sys.argv[1], batch_size=12)
try:
  validate.check_config(bad)
  batch_error = ''
except validate.ConfigError as e:
  batch_error = str(e)
state, _ = train_and_evaluate(config, sys.argv[2])
leaves = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(state)}
shards = {k: [list(x.shape), list(x.addressable_shards[0].data.shape), str(x.sharding.spec)]
          for k, x in leaves.items()}
print('RESULT ' + json.dumps({'shards': shards, 'batch_error': batch_error,
                              'devices': jax.device_count()}))
'''


def test_eight_devices_match_one_device(trained, tmp_path):
  config, reference_dir, _, _ = trained
  env = train_helpers.child_env(num_devices=8)
  env['PYTHONPATH'] += ':' + str(train_helpers.REPO / 'tests' / 'train')
  out = subprocess.run([sys.executable, '-c', CHILD, config.data_dir, str(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  result = json.loads(out.stdout.split('RESULT ')[-1])
  assert result['devices'] == 8
  assert 'config.batch_size=12' in result['batch_error']

  # FSDP: a large kernel and its Adam moments are split 4 ways along one axis; a small
  # vector and the step counter are replicated.
  shards = result['shards']
  fc1 = "['block4_0']['mlp']['fc1']['kernel']"
  assert shards['.params' + fc1][:2] == [[64, 128], [64, 32]]
  mu = [k for k in shards if k.endswith('.mu' + fc1)]
  assert mu and shards[mu[0]][:2] == [[64, 128], [64, 32]], sorted(shards)
  assert shards[".params['head']['bias']"][:2] == [[4], [4]]
  assert shards['.step'][:2] == [[], []]

  one = train_helpers.scalars(reference_dir, 'train/loss')
  eight = train_helpers.scalars(str(tmp_path), 'train/loss')
  assert sorted(one) == sorted(eight) == list(range(1, config.num_train_steps + 1))
  np.testing.assert_allclose([eight[s] for s in sorted(eight)], [one[s] for s in sorted(one)],
                             rtol=1e-4)
