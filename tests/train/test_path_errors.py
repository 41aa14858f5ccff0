"""A path that is not what the command expects: one `error:` line saying what it should hold
and which command makes it, exit code 1, no traceback (commands run as a user runs them)."""
import subprocess
import sys

import pytest

import train_helpers


def _run(*args):
  done = subprocess.run([sys.executable, '-m', *args], cwd=str(train_helpers.REPO),
                        env=train_helpers.child_env(), capture_output=True, text=True,
                        timeout=300, check=False)
  return done.returncode, done.stderr


@pytest.mark.parametrize('setting', ['init_from', 'workdir'])
def test_main(image_folder, tmp_path, setting):
  config = train_helpers.tiny_config(image_folder)
  not_weights = tmp_path / 'not_weights'
  not_weights.mkdir()
  workdir = tmp_path / 'run'
  if setting == 'init_from':
    config.init_from = str(not_weights)
    expected = (f'error: config.init_from: {not_weights} has no `variables` or `model` item; '
                'expected a weights checkpoint directory')
  else:
    workdir.write_text('not a directory')
    expected = f'error: --workdir: {workdir} is a file; the workdir must be a directory'
  config_path = train_helpers.write_config_file(config, tmp_path / 'config.py')
  returncode, stderr = _run('smt_jax.main', f'--config={config_path}', f'--workdir={workdir}')
  assert returncode == 1 and 'Traceback' not in stderr, stderr[-3000:]
  assert stderr.strip().splitlines()[-1].startswith(expected), stderr[-3000:]


def test_export_of_a_training_workdir(trained, tmp_path):
  _, reference_dir, _, _ = trained
  returncode, stderr = _run('smt_jax.tools.export', f'--checkpoint={reference_dir}',
                            f'--output_dir={tmp_path / "out"}')
  assert returncode == 1 and 'Traceback' not in stderr, stderr[-3000:]
  error = stderr.strip().splitlines()[-1]
  assert error.startswith(f'error: --checkpoint {reference_dir} is a training workdir'), error
  assert 'python -m smt_jax.convert' in error
  assert not (tmp_path / 'out').exists()


def test_convert_of_a_missing_file(tmp_path):
  missing = tmp_path / 'smt_tiny.pth'
  returncode, stderr = _run('smt_jax.convert', f'--checkpoint={missing}', '--model=smt_t',
                            f'--output_dir={tmp_path / "out"}')
  assert returncode == 1 and 'Traceback' not in stderr, stderr[-3000:]
  assert stderr.strip().splitlines()[-1] == (
      f'error: No checkpoint file at {missing}. --checkpoint takes an official SMT release '
      'file (.pth, .safetensors or .npz).')
  assert not (tmp_path / 'out').exists()
