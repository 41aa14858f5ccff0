"""Two processes with two CPU devices each (jax.distributed on localhost, gloo collectives)
against one process with four devices, both through `python -m smt_jax.main`, with every
augmentation on (random resized crop, flip, RandAugment, random erasing, Mixup/CutMix).

The global batches are the same bit for bit whatever the number of processes
(tests/data/test_global_arrays.py); what differs is the order in which the batch's rows
meet in reductions, so losses agree to rounding: the test demands 1e-5 relative over 20
steps. Parameters: Adam's normalized step turns rounding noise in near-zero gradients into
steps of about +-lr, so 99% of the parameters must agree to 1e-4 relative (1e-5 absolute)
and every one within 20 lr (the 20 steps' worth).

Then a checkpoint the two processes wrote at step 10 is resumed by one process with four
devices: it continues the same stream from the step alone, and ends where the
uninterrupted two-process run ended, within the same tolerances.
"""
import shutil

import jax
import numpy as np

import train_helpers

TIMEOUT_S = 600
STEPS = 20


def _config(data_dir):
  return train_helpers.tiny_config(
      data_dir, num_train_steps=STEPS, eval_every_steps=STEPS, checkpoint_every_steps=10,
      keep_checkpoints=3, **{'aug.randaugment_num_ops': 2})


def _run(config_path, workdir, log_path, num_processes):
  port = train_helpers.free_port()
  flags = lambda i: ([f'--coordinator_address=localhost:{port}',
                      f'--num_processes={num_processes}', f'--process_id={i}']
                     if num_processes > 1 else [])
  children = [train_helpers.start_main(config_path, workdir, *flags(i),
                                       num_devices=4 // num_processes,
                                       log_path=f'{log_path}{i}.log')
              for i in range(num_processes)]
  for i, child in enumerate(children):
    child.wait(TIMEOUT_S)
    with open(f'{log_path}{i}.log') as f:
      assert child.returncode == 0, f.read()[-4000:]


def _flat_params(workdir, step):
  state = train_helpers.restore_numpy(workdir, step)
  return np.concatenate([x.ravel() for x in jax.tree.leaves(state['params'])])


def _assert_close_params(a, b, lr):
  close = np.isclose(a, b, rtol=1e-4, atol=1e-5)
  assert close.mean() > 0.99, close.mean()
  np.testing.assert_allclose(a, b, atol=STEPS * lr)


def test_two_processes_match_one_and_resume_on_one(tmp_path_factory):
  root = tmp_path_factory.mktemp('mp')
  data_dir = train_helpers.write_folder(root / 'data', 4, 2)  # 16 training images
  config = _config(data_dir)
  config_path = train_helpers.write_config_file(config, root / 'config.py')
  multi, single, resumed = (str(root / name) for name in ('multi', 'single', 'resumed'))
  _run(config_path, multi, str(root / 'multi'), 2)
  # Started afterwards: its 4-device programs can come from the compilation cache.
  _run(config_path, single, str(root / 'single'), 1)
  shutil.copytree(root / 'multi' / 'checkpoints' / '10', root / 'resumed' / 'checkpoints' / '10')
  _run(config_path, resumed, str(root / 'resumed'), 1)

  losses = {run: train_helpers.scalars(run, 'train/loss') for run in (multi, single, resumed)}
  assert sorted(losses[multi]) == sorted(losses[single]) == list(range(1, STEPS + 1))
  assert sorted(losses[resumed]) == list(range(11, STEPS + 1))
  for run in (single, resumed):
    steps = sorted(losses[run])
    np.testing.assert_allclose([losses[run][s] for s in steps],
                               [losses[multi][s] for s in steps], rtol=1e-5)
  counts = [train_helpers.scalars(run, 'eval/num_examples') for run in (multi, single)]
  assert counts[0] == counts[1] == {STEPS: 8.0}

  lr = config.optim.base_lr * config.batch_size / 512
  final = _flat_params(multi, STEPS)
  for run in (single, resumed):
    _assert_close_params(_flat_params(run, STEPS), final, lr)
