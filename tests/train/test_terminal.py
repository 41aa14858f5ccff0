"""What `python -m smt_jax.main` shows on the terminal, and what goes to WORKDIR/log.txt."""
import re
import subprocess
import sys

import train_helpers


def _env():
  """A user's environment: TensorFlow's start-up notices and JAX's probing of the platforms
  (its INFO records for those it does not find) are part of the check."""
  env = train_helpers.child_env()
  del env['TF_CPP_MIN_LOG_LEVEL'], env['JAX_PLATFORMS']
  return env


def _main(config_path, workdir, *args):
  return subprocess.run(
      [sys.executable, '-m', 'smt_jax.main', f'--config={config_path}', f'--workdir={workdir}',
       *args], cwd=str(train_helpers.REPO), env=_env(), capture_output=True,
      text=True, timeout=600, check=False)


def _tensorflow_notices():
  """The start-up notices TensorFlow prints here when imported after jax, as main does.

  Some TensorFlow versions print none once jax has set up absl's C++ logging.
  """
  printed = subprocess.run([sys.executable, '-c', 'import jax, tensorflow'], env=_env(),
                           capture_output=True, text=True, check=True).stderr
  return [notice for notice in ('oneDNN', 'cpu_feature_guard') if notice in printed]


def test_terminal_shows_progress_and_the_log_file_the_rest(image_folder, tmp_path):
  config = train_helpers.tiny_config(image_folder, log_every_steps=10)
  config_path = train_helpers.write_config_file(config, tmp_path / 'config.py')
  workdir = tmp_path / 'run'
  result = _main(config_path, workdir)
  printed = (result.stdout + result.stderr).splitlines()
  assert result.returncode == 0, '\n'.join(printed[-50:])
  # Warnings reach the terminal too (orbax may say a save waited); INFO logs do not.
  terminal = [line for line in printed if not re.match(r'[WE]\d{4} ', line)]
  assert len(terminal) == 8, '\n'.join(printed)  # start, 4 steps, 2 evals, done
  for part in ('smt_t, 84,508 parameters | 1 cpu device(s) | 32 train images, 16 eval | '
               '40 steps', f'workdir {workdir}'):
    assert part in terminal[0]
  steps = [line for line in terminal if re.match(r'step +\d+/40  loss \d+\.\d{4}  lr ', line)]
  assert [int(re.match(r'step +(\d+)', line).group(1)) for line in steps] == [10, 20, 30, 40]
  assert 'compiled and ran in' in steps[0]
  assert all(re.search(r' [\d,.]+ images/s  ETA \d+:\d\d$', line) for line in steps[1:])
  evals = [line for line in terminal if re.match(r'step \d+: eval top-1 ', line)]
  assert [line.split(':')[0] for line in evals] == ['step 20', 'step 40']
  assert evals[-1].endswith('(16 images)')
  assert terminal[-1].startswith('done at step 40 in ')
  log = (workdir / 'log.txt').read_text()
  assert 'checkpoint_manager.py' in log  # orbax
  for notice in _tensorflow_notices():
    assert notice in log and notice not in result.stderr
  assert 'Total: ' in log  # the parameter table

  # --verbosity brings absl's logging (orbax here) back to the terminal.
  result = _main(config_path, workdir, '--config.eval_only=True', '--verbosity=0')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'checkpoint_manager.py' in result.stderr
  assert re.search(r'top-1 \d\.\d{4}  top-5 \d\.\d{4}  \(16 images\)', result.stdout)
