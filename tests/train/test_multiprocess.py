"""Two processes with two CPU devices each (jax.distributed on localhost, gloo collectives)
against one process with four devices, both through `python -m smt_jax.main`.

Augmentation is off and every step's batch is the whole training split, so both runs see
the same examples at every step, whichever process reads which; what differs is the order
in which the batch's rows meet in reductions. Measured: losses agree to ~1e-6 relative,
and all but ~0.1% of the parameters to 1e-6. The rest are parameters whose gradient is at
rounding-noise level, where Adam's normalized step (about +-lr = 3e-4 here) takes the
noise's sign, so they may differ by a few lr: the test allows rtol 1e-4 / atol 1e-5 for
99% of the parameters and 6 lr (the 6 steps' worth) for every one.
"""
import jax
import numpy as np

import train_helpers

TIMEOUT_S = 600


def _config(data_dir):
  return train_helpers.tiny_config(
      data_dir, num_train_steps=6, eval_every_steps=6, checkpoint_every_steps=6, **{
          'aug.random_resized_crop': False, 'aug.hflip': False, 'aug.reprob': 0.0,
          'aug.mixup_alpha': 0.0, 'aug.cutmix_alpha': 0.0})


def test_two_processes_match_one(tmp_path_factory):
  root = tmp_path_factory.mktemp('mp')
  data_dir = train_helpers.write_folder(root / 'data', 4, 2)  # 16 training images
  config_path = train_helpers.write_config_file(_config(data_dir), root / 'config.py')
  port = train_helpers.free_port()
  multi = [train_helpers.start_main(
      config_path, str(root / 'multi'), f'--coordinator_address=localhost:{port}',
      '--num_processes=2', f'--process_id={i}', num_devices=2,
      log_path=str(root / f'multi{i}.log')) for i in range(2)]
  for i, child in enumerate(multi):
    child.wait(TIMEOUT_S)
    assert child.returncode == 0, (root / f'multi{i}.log').read_text()[-4000:]
  # Started afterwards: its 4-device programs can come from the compilation cache.
  single = train_helpers.start_main(config_path, str(root / 'single'), num_devices=4,
                                    log_path=str(root / 'single.log'))
  single.wait(TIMEOUT_S)
  assert single.returncode == 0, (root / 'single.log').read_text()[-4000:]

  losses = [train_helpers.scalars(str(root / run), 'train/loss') for run in ('multi', 'single')]
  assert sorted(losses[0]) == sorted(losses[1]) == list(range(1, 7))
  np.testing.assert_allclose([losses[0][s] for s in range(1, 7)],
                             [losses[1][s] for s in range(1, 7)], rtol=1e-4)
  counts = [train_helpers.scalars(str(root / run), 'eval/num_examples')
            for run in ('multi', 'single')]
  assert counts[0] == counts[1] == {6: 8.0}
  states = [train_helpers.restore_numpy(str(root / run), 6) for run in ('multi', 'single')]
  assert len(train_helpers.data_state(str(root / 'multi'), 6)['processes']) == 2
  flat = [np.concatenate([x.ravel() for x in jax.tree.leaves(s['params'])]) for s in states]
  close = np.isclose(flat[0], flat[1], rtol=1e-4, atol=1e-5)
  assert close.mean() > 0.99, close.mean()
  lr = 1e-2 * 16 / 512
  np.testing.assert_allclose(flat[0], flat[1], atol=6 * lr)
