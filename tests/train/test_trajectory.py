"""The training recipe reproduces the official training code update by update.

tests/testdata/recipe_trajectory/trajectory.npz holds 24 updates of a micro SMT run by the
official code (its optimizer, scheduler, loss and `train_one_epoch` update logic; see
make_trajectory.py there). The same inputs go through smt_jax's own `create_optimizer` and
`make_train_step`, from the converted initial weights.
"""
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from smt_jax.convert import torch_to_flax
from smt_jax.data import device_augment
from smt_jax.models import SMT
from smt_jax.train import optim
from smt_jax.train import train_step as train_step_lib
import train_helpers

DATA = pathlib.Path(__file__).resolve().parents[1] / 'testdata' / 'recipe_trajectory'


def _load():
  with np.load(DATA / 'trajectory.npz') as data:
    return {k: data[k] for k in data.files}


def _state_dict(ref, prefix):
  return {k[len(prefix):]: v for k, v in ref.items() if k.startswith(prefix)}


def _optim_config(ref) -> ml_collections.ConfigDict:
  """The official run's recipe in smt_jax's config fields."""
  config = train_helpers.default.get_config().optim
  config.update(base_lr=float(ref['base_lr']), warmup_lr=float(ref['warmup_lr']),
                min_lr=float(ref['min_lr']), warmup_epochs=float(ref['warmup_epochs']),
                weight_decay=float(ref['weight_decay']), clip_grad_norm=float(ref['clip_grad']),
                grad_accum_steps=int(ref['accumulation']))
  return config


def _update_batches(ref):
  """Per update: the step's batch {'image', 'targets'} in the train step's layout.

  The train step takes micro-batch i as rows i, i + n, i + 2n, ... of the batch, so the
  official micro-batches are interleaved. Unmixed micro-batches are normalized here and
  get smoothed one-hot targets; the mixed ones are the images and targets timm's Mixup
  produced.
  """
  accum, smoothing = int(ref['accumulation']), float(ref['label_smoothing'])
  mixed = {int(m): i for i, m in enumerate(ref['mixed_micro'])}
  micro_images, micro_targets = [], []
  for m, (images, labels) in enumerate(zip(ref['images'], ref['labels'])):
    if m in mixed:
      micro_images.append(ref['mixed_images'][mixed[m]])
      micro_targets.append(ref['mixed_targets'][mixed[m]].astype(np.float32))
    else:
      micro_images.append(np.asarray(device_augment.normalize(images)))
      micro_targets.append(np.asarray(device_augment.smooth_one_hot(
          labels, int(ref['num_classes']), smoothing)))
  for u in range(len(micro_images) // accum):
    group = slice(u * accum, (u + 1) * accum)
    yield {'image': np.stack(micro_images[group], 1).reshape(-1, *micro_images[0].shape[1:]),
           'targets': np.stack(micro_targets[group], 1).reshape(-1, micro_targets[0].shape[-1])}


@pytest.fixture(scope='module')
def run():
  """smt_jax's trajectory on the official inputs: (reference, lrs, metrics, final state)."""
  ref = _load()
  model = SMT(embed_dims=tuple(int(d) for d in ref['embed_dims']),
              mlp_ratios=tuple(int(r) for r in ref['mlp_ratios']),
              depths=tuple(int(d) for d in ref['depths']), head_conv=int(ref['head_conv']),
              use_layerscale=True, num_classes=int(ref['num_classes']))
  variables = torch_to_flax(_state_dict(ref, 'initial/'), model)
  config = _optim_config(ref)
  global_batch = int(ref['micro_batch']) * int(ref['accumulation'])
  steps_per_epoch = int(ref['updates_per_epoch'])
  total_steps = steps_per_epoch * int(ref['epochs'])
  tx, schedule = optim.create_optimizer(config, variables['params'], global_batch,
                                        steps_per_epoch, total_steps)
  state = train_step_lib.create_state(variables, tx, use_ema=False)
  step = jax.jit(train_step_lib.make_train_step(
      model, tx, lambda rng, batch: (batch['image'], batch['targets']), seed=0,
      grad_accum_steps=config.grad_accum_steps))
  metrics = []
  with jax.default_matmul_precision('highest'):
    for batch in _update_batches(ref):
      state, m = step(state, batch)
      metrics.append(jax.device_get(m))
  lrs = np.asarray([schedule(c) for c in range(total_steps)])
  return ref, lrs, metrics, model, jax.device_get(state)


def test_learning_rate_of_every_update_matches(run):
  ref, lrs, _, _, _ = run
  np.testing.assert_allclose(lrs, ref['lr'], rtol=1e-6)


def test_loss_and_gradient_norm_of_every_update_match(run):
  ref, _, metrics, _, _ = run
  # Clipping must have bitten on some updates and not others for this to cover it.
  assert 0 < np.sum(ref['grad_norm'] > ref['clip_grad']) < len(ref['grad_norm'])
  np.testing.assert_allclose([m['loss'] for m in metrics], ref['loss'], rtol=1e-4)
  np.testing.assert_allclose([m['grad_norm'] for m in metrics], ref['grad_norm'], rtol=1e-4)


def test_final_weights_and_batch_statistics_match(run):
  ref, lrs, _, model, state = run
  official = torch_to_flax(_state_dict(ref, 'final/'), model)
  initial = torch_to_flax(_state_dict(ref, 'initial/'), model)
  tolerance = 0.1 * float(np.max(lrs))
  ours = {'params': state.params, 'batch_stats': state.batch_stats}
  flat_ours = jax.tree_util.tree_leaves_with_path(ours)
  flat_official = jax.tree.leaves(official)
  flat_initial = jax.tree.leaves(initial)
  moved = 0
  for (path, mine), theirs, start in zip(flat_ours, flat_official, flat_initial):
    name = jax.tree_util.keystr(path)
    if name.endswith("['num_batches_tracked']"):
      np.testing.assert_array_equal(mine, theirs, err_msg=name)
      continue
    np.testing.assert_allclose(mine, theirs, atol=tolerance, rtol=0, err_msg=name)
    moved += np.max(np.abs(np.asarray(theirs) - start)) > 10 * tolerance
  # The comparison is only meaningful if training moved the weights well past it.
  assert moved > len(flat_official) // 2
