"""The speed benchmark: one JSON line whose figures come from the compiled step.

No time is asserted: the figures are checked for being there and for what XLA's cost
analysis must say about them (a training step costs about three forward passes).
"""
import json
import os
import pathlib
import subprocess
import sys

import jax
import pytest

from smt_jax.tools import bench

REPO = pathlib.Path(__file__).resolve().parents[2]
FIELDS = {'images_per_sec', 'step_ms', 'tflops_per_sec', 'gflops_per_step', 'peak_memory_gb',
          'compile_s', 'device'}
SMALL = dict(model_name='smt_t', batch=2, image_size=64, steps=1, warmup=1)


def _check_figures(result):
  assert FIELDS <= set(result), sorted(FIELDS - set(result))
  assert result['images_per_sec'] > 0 and result['step_ms'] > 0
  assert result['peak_memory_gb'] > 0
  assert result['device'].startswith(jax.devices()[0].platform + ':')
  assert abs(result['images_per_sec'] * result['step_ms'] / 1e3 - 2) < 0.01


def test_train_and_infer_figures(fast_compilation):
  # A shallow SMT-T: the same layers as the full one, a fraction of the compile time.
  small = dict(SMALL, depths=(1, 1, 2, 1))
  train, infer = bench.run(mode='train', **small), bench.run(mode='infer', **small)
  for result in (train, infer):
    _check_figures(result)
  # Forward, backward (about twice the forward) and the optimizer update.
  assert 2.5 < train['gflops_per_step'] / infer['gflops_per_step'] < 4


def test_segmenter_train_and_infer_figures(fast_compilation):
  """UPerNet on a shallow SMT-T: per-pixel labels, both heads in training, the main head's
  logits in inference."""
  small = dict(SMALL, model_name='upernet_smt_t', depths=(1, 1, 2, 1))
  train, infer = bench.run(mode='train', **small), bench.run(mode='infer', **small)
  for result in (train, infer):
    _check_figures(result)
  assert 2.5 < train['gflops_per_step'] / infer['gflops_per_step'] < 4.5


def test_command_line_prints_one_json_line():
  # As fast_compilation, in the child process.
  env = dict(os.environ, JAX_DISABLE_MOST_OPTIMIZATIONS='1',
             PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')]))
  result = subprocess.run(
      [sys.executable, '-m', 'smt_jax.tools.bench', '--model=smt_t', '--batch=2', '--image_size=64',
       '--steps=1', '--warmup=1', '--mode=infer'],
      capture_output=True, text=True, env=env, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.strip().splitlines()
  assert len(lines) == 1, result.stdout
  printed = json.loads(lines[0])
  _check_figures(printed)
  assert (printed['model'], printed['mode'], printed['batch']) == ('smt_t', 'infer', 2)
  assert printed['retain_host_memory'] is sys.platform.startswith('linux')
