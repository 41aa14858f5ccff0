"""The speed benchmark command: one JSON line whose figures come from the compiled step.

No time is asserted: the figures are checked for being there and for what XLA's cost
analysis must say about them (a training step costs about three forward passes).
"""
import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
FIELDS = {'images_per_sec', 'step_ms', 'tflops_per_sec', 'gflops_per_step', 'peak_memory_gb',
          'compile_s', 'device', 'retain_host_memory'}


def _bench(*flags):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]))
  result = subprocess.run(
      [sys.executable, '-m', 'smt_jax.bench', '--model=smt_t', '--batch=2', '--image_size=64',
       '--steps=1', '--warmup=1', *flags],
      capture_output=True, text=True, env=env, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 1, result.stdout
  return json.loads(lines[0])


def test_train_and_infer_report_their_figures():
  train = _bench('--mode=train')
  infer = _bench('--mode=infer', '--noretain_host_memory')
  for result in (train, infer):
    assert FIELDS <= set(result), sorted(FIELDS - set(result))
    assert result['images_per_sec'] > 0 and result['step_ms'] > 0
    assert result['peak_memory_gb'] > 0
    assert result['device'].startswith('cpu:')
    assert abs(result['images_per_sec'] * result['step_ms'] / 1e3 - 2) < 0.01
  assert train['retain_host_memory'] is (sys.platform == 'linux')
  assert infer['retain_host_memory'] is False
  # Forward, backward (about twice the forward) and the optimizer update.
  assert 2.5 < train['gflops_per_step'] / infer['gflops_per_step'] < 4
