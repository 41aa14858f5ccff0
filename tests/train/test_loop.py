"""End to end on a tiny image folder: train, evaluate, checkpoints, eval-only, init_from, the
moving average, NaN."""
import os
import shutil

import jax
import numpy as np
import pytest

from smt_jax import weights
from smt_jax.tools import export
from smt_jax.train import train_and_evaluate
from smt_jax.train import validate
import train_helpers


def test_train_writes_metrics_and_checkpoints(trained):
  config, workdir, state, metrics = trained
  assert int(state.step) == 40
  assert metrics['eval/num_examples'] == 16
  for name in ('eval/top1', 'eval/top5'):
    assert 0 <= metrics[name] <= 1
  assert metrics['eval/top5'] >= metrics['eval/top1']
  losses = train_helpers.scalars(workdir, 'train/loss')
  assert sorted(losses) == list(range(1, 41))
  assert all(np.isfinite(list(losses.values())))
  lrs = train_helpers.scalars(workdir, 'train/lr')
  assert lrs[1] == pytest.approx(config.optim.warmup_lr * 16 / 512, rel=1e-5)
  assert max(lrs.values()) <= config.optim.base_lr * 16 / 512 * (1 + 1e-6)
  for tag in ('train/grad_norm', 'eval/loss', 'eval/top1', 'eval/top5', 'eval/num_examples'):
    assert train_helpers.scalars(workdir, tag), tag
  top1 = train_helpers.scalars(workdir, 'eval/top1')
  assert sorted(top1) == [20, 40]
  best = max(top1, key=lambda s: (top1[s], s))  # ties: the later step
  # Saved every 8 steps; kept: the last two and the best evaluated one.
  assert train_helpers.checkpoint_steps(workdir) == sorted({32, 40, best})
  # The stream continues from the step; the checkpoint names the stream it belongs to.
  assert train_helpers.data_state(workdir, 40)['stream'] == {
      'dataset': 'folder', 'seed': config.seed, 'batch_size': 16, 'num_examples': 32}


def test_eval_only_reproduces_final_eval(trained):
  config, workdir, _, metrics = trained
  config = train_helpers.tiny_config(config.data_dir, eval_only=True)
  _, again = train_and_evaluate(config, workdir)
  assert again == metrics


def test_init_from_weights_checkpoint(trained, tmp_path):
  config, _, state, metrics = trained
  model = validate.create_model_from_config(config, 4)
  weights.save(str(tmp_path / 'weights'),
               {'params': state.params, 'batch_stats': state.batch_stats}, model)
  config = train_helpers.tiny_config(config.data_dir, eval_only=True,
                                     init_from=str(tmp_path / 'weights'))
  _, from_weights = train_and_evaluate(config, str(tmp_path / 'eval'))
  assert from_weights == metrics


def test_moving_average_is_scored_and_exported(trained, tmp_path):
  """With config.optim.ema_decay, eval_ema/ scores the moving average, `export --ema`
  writes it, and evaluating that export reproduces the eval_ema/ scores."""
  plain_config, plain_workdir, _, _ = trained
  config = train_helpers.tiny_config(plain_config.data_dir, num_train_steps=8, eval_every_steps=8,
                                     **{'optim.ema_decay': 0.5})
  workdir = str(tmp_path / 'run')
  state, metrics = train_and_evaluate(config, workdir)
  state = jax.device_get(state)
  ema_metrics = {k.replace('eval_ema/', 'eval/'): v for k, v in metrics.items()
                 if k.startswith('eval_ema/')}
  assert set(ema_metrics) == {k for k in metrics if k.startswith('eval/')}
  assert not np.array_equal(state.ema_params['head']['kernel'], state.params['head']['kernel'])

  export.export(None, str(tmp_path / 'ema'), 'orbax', config=config, workdir=workdir, ema=True)
  _, variables = weights.load(str(tmp_path / 'ema'))
  train_helpers.assert_trees_equal(state.ema_params, variables['params'])
  scoring = train_helpers.tiny_config(config.data_dir, eval_only=True,
                                      init_from=str(tmp_path / 'ema'))
  _, scores = train_and_evaluate(scoring, str(tmp_path / 'eval'))
  assert scores == pytest.approx(ema_metrics, rel=1e-6)

  with pytest.raises(ValueError, match=r'kept no moving average .*ema_decay is None'):
    export.export(None, str(tmp_path / 'none'), 'orbax', config=plain_config,
                  workdir=plain_workdir, ema=True)
  with pytest.raises(ValueError, match='--ema needs --workdir'):
    export.export(str(tmp_path / 'ema'), str(tmp_path / 'none'), 'orbax', ema=True)


def test_nan_loss_stops_at_that_step(image_folder, tmp_path):
  # An absurd learning rate blows the parameters up after step 1; step 2's loss is NaN.
  config = train_helpers.tiny_config(image_folder, checkpoint_every_steps=1,
                                     **{'optim.base_lr': 1e30, 'optim.warmup_epochs': 0.0})
  with pytest.raises(FloatingPointError, match=r'step 2 is NaN or Inf.*checkpoint \(step 1\)'):
    train_and_evaluate(config, str(tmp_path))
  assert train_helpers.checkpoint_steps(str(tmp_path)) == [1]
  saved = train_helpers.restore_numpy(str(tmp_path), 1)
  assert saved['step'] == 1 and saved['nonfinite_step'] == 0
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(saved['params']))


def test_command_line_eval_only_prints_top1(trained, tmp_path):
  config, workdir, _, metrics = trained
  shutil.copytree(os.path.join(workdir, 'checkpoints'), tmp_path / 'run' / 'checkpoints')
  config_path = train_helpers.write_config_file(config, tmp_path / 'config.py')
  child = train_helpers.start_main(config_path, str(tmp_path / 'run'), '--config.eval_only=True',
                                   log_path=str(tmp_path / 'log'))
  assert child.wait(300) == 0, (tmp_path / 'log').read_text()[-3000:]
  assert (f"top-1 {metrics['eval/top1']:.4f}  top-5 {metrics['eval/top5']:.4f}  (16 images)"
          in (tmp_path / 'log').read_text())
