"""Damaged checkpoints and failed saves, through `python -m smt_jax.main` as a user runs it.

Each test copies the reference run's workdir (`trained`: checkpoints 32 and 40 of a 40-step
run), damages it as a partial copy, a flaky disk or a full disk would, and runs
main on the copy with the same config. A damaged newest step must be reported in one
message, moved to checkpoints/damaged/ and the run resumed from step 32; training then
ends at step 40 with what the uninterrupted reference computed there (tolerances as in
test_resume.py: resuming is exact up to XLA:CPU's load-dependent rounding).
"""
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

import train_helpers

TIMEOUT_S = 300


def _files(step_dir: pathlib.Path) -> dict:
  """{relative path: sha256} of every file under `step_dir`."""
  return {str(p.relative_to(step_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
          for p in sorted(step_dir.rglob('*')) if p.is_file()}


def _largest_array_file(step_dir: pathlib.Path) -> pathlib.Path:
  return max((p for p in (step_dir / 'state').rglob('d/*') if p.is_file()),
             key=lambda p: p.stat().st_size)


def flip_bytes(step_dir: pathlib.Path) -> None:
  path = _largest_array_file(step_dir)
  data = bytearray(path.read_bytes())
  middle = len(data) // 2
  data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
  path.write_bytes(bytes(data))


def truncate(step_dir: pathlib.Path) -> None:
  path = _largest_array_file(step_dir)
  os.truncate(path, path.stat().st_size // 3)


def delete_commit_marker(step_dir: pathlib.Path) -> None:
  (step_dir / 'commit_success.txt').unlink()


def _copy(reference_dir: str, tmp_path: pathlib.Path) -> pathlib.Path:
  workdir = tmp_path / 'run'
  shutil.copytree(reference_dir, workdir)
  assert train_helpers.checkpoint_steps(str(workdir)) == [32, 40]
  return workdir


def _run_main(config, workdir: pathlib.Path, tmp_path: pathlib.Path, max_file_kib=None):
  """(exit code, stdout + stderr) of main on `workdir`; output through a pipe, not a file.

  `max_file_kib` makes the child's writes past that file size fail (bash's `ulimit -f`,
  i.e. RLIMIT_FSIZE; Python ignores SIGXFSZ, so writes fail with EFBIG as they fail
  with ENOSPC on a full disk, even as root).
  """
  config_path = train_helpers.write_config_file(config, tmp_path / 'config.py')
  command = [sys.executable, '-m', 'smt_jax.main', f'--config={config_path}',
             f'--workdir={workdir}']
  if max_file_kib is not None:
    command = ['bash', '-c', f'ulimit -f {max_file_kib} && exec "$@"', 'bash', *command]
  done = subprocess.run(
      command, cwd=str(train_helpers.REPO), env=train_helpers.child_env(),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT_S,
      check=False)
  return done.returncode, done.stdout


def _assert_same_step_40(config, reference_dir: str, workdir: pathlib.Path):
  want, got = (train_helpers.restore_numpy(str(d), 40) for d in (reference_dir, workdir))
  assert int(got['step']) == 40
  assert (train_helpers.data_state(str(workdir), 40)
          == train_helpers.data_state(reference_dir, 40))
  losses = [train_helpers.scalars(str(d), 'train/loss') for d in (reference_dir, workdir)]
  np.testing.assert_allclose([losses[1][s] for s in range(33, 41)],
                             [losses[0][s] for s in range(33, 41)], rtol=1e-4)
  lr = config.optim.base_lr * config.batch_size / 512
  for field in ('params', 'opt_state'):
    a, b = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(s[field])]) for s in (want, got))
    assert np.isclose(b, a, rtol=1e-4, atol=1e-6).mean() > 0.99, field
    np.testing.assert_allclose(b, a, atol=4 * lr, err_msg=field)


# Flipped bytes either fail to decompress or decompress into other numbers, which only
# the saved checksums reveal; which one happens depends on where the bytes land.
FLIPPED = ('Error reading', 'checksum mismatch')


@pytest.mark.parametrize('damage,reasons', [
    (flip_bytes, FLIPPED),
    (truncate, ('OUT_OF_RANGE: Error reading',)),
    (delete_commit_marker, ('commit marker commit_success.txt is missing',))])
def test_damaged_newest_step_is_moved_aside_and_the_previous_resumes(
    trained, tmp_path, damage, reasons):
  config, reference_dir, _, _ = trained
  workdir = _copy(reference_dir, tmp_path)
  damage(workdir / 'checkpoints' / '40')
  damaged_files = _files(workdir / 'checkpoints' / '40')

  returncode, log = _run_main(config, workdir, tmp_path)

  assert returncode == 0, log[-4000:]
  assert 'Traceback' not in log
  reports = [line for line in log.splitlines() if 'is damaged' in line]
  assert len(reports) == 1, reports
  assert f'Checkpoint step 40 in {workdir}/checkpoints is damaged' in reports[0]
  assert any(r in reports[0] for r in reasons), reports[0]
  assert 'resumed from step 32' in reports[0], reports[0]
  if damage is not delete_commit_marker:  # the message names the array
    assert re.search(r'is damaged \((opt_state|params|batch_stats)\.[\w.]+: ', reports[0])
  assert 'resuming at step 32' in log  # the start line on the terminal
  assert 'Resuming from checkpoint step 32' in (workdir / 'log.txt').read_text()
  aside = workdir / 'checkpoints' / 'damaged' / '40'
  assert _files(aside) == damaged_files  # kept as it was, for inspection
  assert train_helpers.checkpoint_steps(str(workdir))[-1] == 40  # written anew
  _assert_same_step_40(config, reference_dir, workdir)


def test_no_intact_checkpoint_stops_and_touches_nothing(trained, tmp_path):
  config, reference_dir, _, _ = trained
  workdir = _copy(reference_dir, tmp_path)
  flip_bytes(workdir / 'checkpoints' / '40')
  delete_commit_marker(workdir / 'checkpoints' / '32')
  before = _files(workdir / 'checkpoints')

  returncode, log = _run_main(config, workdir, tmp_path)

  assert returncode == 1, log[-4000:]
  assert 'Traceback' not in log
  error = log.strip().splitlines()[-1]
  assert error.startswith(f'error: No checkpoint in {workdir}/checkpoints restores '
                          'completely (step 40: '), error
  assert any(r in error for r in FLIPPED) and 'step 32: its commit marker' in error
  assert 'Nothing was moved' in error
  assert _files(workdir / 'checkpoints') == before


def test_failed_save_stops_with_the_directory_and_keeps_previous_checkpoints(
    trained, tmp_path):
  config, reference_dir, _, _ = trained
  workdir = _copy(reference_dir, tmp_path)
  shutil.rmtree(workdir / 'checkpoints' / '40')  # so the run saves step 40 again
  before = _files(workdir / 'checkpoints')

  # The array files of a step are larger than 64 KiB; logs go through a pipe.
  returncode, log = _run_main(config, workdir, tmp_path, max_file_kib=64)

  assert returncode == 1, log[-4000:]
  # Orbax's writer threads log their own tracebacks too; the run ends with one message.
  errors = [line for line in log.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1, log[-4000:]
  error = errors[0]
  assert error.startswith(
      f'error: Could not write checkpoint step 40 to {workdir}/checkpoints: '), error
  # EFBIG, reported by the writer as the OS names it or as its own write error.
  assert 'File too large' in error or 'Error writing local file' in error, error
  assert 'unchanged (newest: step 32)' in error, error
  assert train_helpers.checkpoint_steps(str(workdir)) == [32]
  after = _files(workdir / 'checkpoints')
  assert {k: v for k, v in after.items() if k.split('/')[0] == '32'} == before
