"""The input benchmark command: runs on generated data; a missing dataset is one clear line."""
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIG = '''
import ml_collections
from smt_jax.data import default_aug_config

def get_config():
  return ml_collections.ConfigDict({
      'dataset': 'imagenet2012', 'data_dir': ml_collections.config_dict.placeholder(str),
      'image_size': 32, 'batch_size': 4, 'seed': 0, 'data_threads': 2, 'data_workers': 0,
      'aug': default_aug_config()})
'''


def _bench(tmp_path, *flags):
  config = tmp_path / 'config.py'
  config.write_text(CONFIG)
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]))
  return subprocess.run(
      [sys.executable, '-m', 'smt_jax.tools.bench_input', f'--config={config}', *flags],
      capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240)


def test_mock_benchmark_reports_images_per_core(tmp_path):
  result = _bench(tmp_path, '--mock', '--mock_examples=8', '--workers=0,1',
                  '--warmup_batches=1', '--num_batches=2')
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  assert lines[0].startswith('dataset folder, image_size 32, batch 4')
  rows = [line.split() for line in lines[2:]]
  assert [row[:2] for row in rows] == [['smt_jax', '0'], ['smt_jax', '1']]
  for row in rows:  # images/s, cores busy, images/s per core
    assert all(float(value) > 0 for value in row[2:]), row


def test_missing_dataset_is_one_message_not_a_traceback(tmp_path):
  result = _bench(tmp_path, f'--config.data_dir={tmp_path / "tfds"}')
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr
  assert "Dataset 'imagenet2012' is not prepared" in result.stderr
  assert 'tfds build imagenet2012 --manual_dir=' in result.stderr
  assert result.stderr.count('\n') <= 4, result.stderr
