"""Writes trajectory.npz and mixup_draws.npz with the official SMT training code.

Run with the official repository (github.com/AFeng-x/SMT, commit 11e954d) on the path
and timm 0.4.12 installed; see README.md here for the environment and the command.

trajectory.npz: 24 optimizer updates of a micro SMT (layer scale on, BatchNorm in train
mode) built by the official `models.build_model`, optimized by the official
`optimizer.build_optimizer` (AdamW, no decay on 1-D parameters and biases) and
`lr_scheduler.build_scheduler` (timm's CosineLRScheduler, warmup as a prefix), with the
learning rates scaled as the official `main.py` scales them (batch x world size x
accumulation / 512). The update logic is that of `main.train_one_epoch`: loss divided by
the accumulation steps, backward per micro-batch, every second micro-batch
`clip_grad_norm_`, `optimizer.step()`, `zero_grad()` and
`lr_scheduler.step_update((epoch * num_steps + idx) // accumulation)`. The loss is timm's
`LabelSmoothingCrossEntropy(0.1)` (the official criterion without mixup), except for the
two micro-batches of update 10, which go through timm's `Mixup` with the official
settings (one drawn as CutMix, one as Mixup) and `SoftTargetCrossEntropy` (the official
criterion with mixup). AMP's GradScaler is left out: its scaling and unscaling cancel.

Everything runs in float64 so that the reference carries no rounding of its own; the
initial weights and the inputs are float32 values, which both sides then see exactly.

mixup_draws.npz: many draws of timm's `Mixup` batch parameters with the official settings
(whether CutMix, lambda, the CutMix box and its corrected lambda), for the statistical
comparison with smt_jax's Mixup/CutMix, and one CutMix and one Mixup batch as timm mixes
them, with their parameters, for the exact comparison.
"""
import argparse
import functools
import os
import sys

import numpy as np
import torch

NUM_CLASSES = 5
IMAGE_SIZE = 32
MICRO_BATCH = 4        # official DATA.BATCH_SIZE (per process; one process)
ACCUMULATION = 2
MICRO_PER_EPOCH = 12   # len(data_loader): 6 updates per epoch
EPOCHS = 4             # 24 updates
MIXED_UPDATE = 10      # 1-based update whose two micro-batches are mixed
MIXUP_DRAWS = 20000


def official_config(official):
  sys.path.insert(0, official)
  from config import _C  # pylint: disable=import-outside-toplevel
  config = _C.clone()
  config.defrost()
  config.DATA.IMG_SIZE = IMAGE_SIZE
  config.DATA.BATCH_SIZE = MICRO_BATCH
  config.MODEL.NUM_CLASSES = NUM_CLASSES
  config.MODEL.DROP_PATH_RATE = 0.0
  config.MODEL.SMT.EMBED_DIMS = [8, 16, 32, 64]
  config.MODEL.SMT.MLP_RATIOS = [4, 4, 4, 2]
  config.MODEL.SMT.DEPTHS = [1, 1, 2, 1]
  config.MODEL.SMT.USE_LAYERSCALE = True
  config.TRAIN.EPOCHS = EPOCHS
  config.TRAIN.WARMUP_EPOCHS = 1
  config.TRAIN.BASE_LR = 0.064
  config.TRAIN.WARMUP_LR = 6.4e-5
  config.TRAIN.MIN_LR = 6.4e-4
  config.TRAIN.CLIP_GRAD = 2.6  # below about half of the gradient norms
  config.TRAIN.ACCUMULATION_STEPS = ACCUMULATION
  # main.py's linear scaling (world size 1).
  scale = config.DATA.BATCH_SIZE * 1 / 512.0 * config.TRAIN.ACCUMULATION_STEPS
  config.TRAIN.BASE_LR *= scale
  config.TRAIN.WARMUP_LR *= scale
  config.TRAIN.MIN_LR *= scale
  config.freeze()
  return config


def make_mixup(config):
  """timm's Mixup exactly as data/build.py builds it."""
  import timm.data.mixup as timm_mixup  # pylint: disable=import-outside-toplevel
  # timm 0.4.12 builds the targets on device 'cuda'; here they are built on the CPU.
  timm_mixup.mixup_target = functools.partial(timm_mixup.mixup_target, device='cpu')
  return timm_mixup.Mixup(
      mixup_alpha=config.AUG.MIXUP, cutmix_alpha=config.AUG.CUTMIX,
      cutmix_minmax=config.AUG.CUTMIX_MINMAX, prob=config.AUG.MIXUP_PROB,
      switch_prob=config.AUG.MIXUP_SWITCH_PROB, mode=config.AUG.MIXUP_MODE,
      label_smoothing=config.MODEL.LABEL_SMOOTHING, num_classes=config.MODEL.NUM_CLASSES)


def seed_for(mixup, want_cutmix, start):
  """The first numpy seed from `start` whose batch draw mixes, by CutMix iff asked."""
  seed = start
  while True:
    np.random.seed(seed)
    lam, use_cutmix = mixup._params_per_batch()  # pylint: disable=protected-access
    if lam < 1.0 and use_cutmix == want_cutmix:
      return seed
    seed += 1


def draw_params(mixup, shape):
  """One batch's parameters, consuming numpy's generator as Mixup._mix_batch does."""
  from timm.data.mixup import cutmix_bbox_and_lam  # pylint: disable=import-outside-toplevel
  lam, use_cutmix = mixup._params_per_batch()  # pylint: disable=protected-access
  box, corrected = (0, 0, 0, 0), lam
  if use_cutmix:
    box, corrected = cutmix_bbox_and_lam(shape, lam, correct_lam=True)
  return use_cutmix, lam, box, corrected


def mixup_draws(mixup):
  """MIXUP_DRAWS batch draws at 32x32, and two whole mixed batches (CutMix, Mixup)."""
  np.random.seed(1)
  draws = [draw_params(mixup, (8, 3, IMAGE_SIZE, IMAGE_SIZE)) for _ in range(MIXUP_DRAWS)]
  out = {'image_size': IMAGE_SIZE}
  for i, key in enumerate(('use_cutmix', 'lam', 'box', 'lam_corrected')):
    out[key] = np.asarray([d[i] for d in draws])
  rng = np.random.RandomState(2)
  images = rng.normal(size=(8, 3, 12, 20)).astype(np.float32)
  labels = rng.randint(0, NUM_CLASSES, 8)
  cases = []
  for seed in (seed_for(mixup, True, 0), seed_for(mixup, False, 0)):
    np.random.seed(seed)
    use_cutmix, _, box, lam = draw_params(mixup, images.shape)
    np.random.seed(seed)
    mixed, targets = mixup(torch.from_numpy(images.copy()), torch.from_numpy(labels))
    cases.append((use_cutmix, lam, box, mixed.permute(0, 2, 3, 1).numpy(), targets.numpy()))
  out.update(batch_images=images.transpose(0, 2, 3, 1), batch_labels=labels.astype(np.int32))
  for i, key in enumerate(('use_cutmix', 'lam', 'box', 'images', 'targets')):
    out[f'batch_mixed_{key}'] = np.asarray([c[i] for c in cases])
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--official', required=True, help='checkout of AFeng-x/SMT at 11e954d')
  parser.add_argument('--out', default=os.path.dirname(os.path.abspath(__file__)))
  args = parser.parse_args()

  config = official_config(args.official)
  from models import build_model  # pylint: disable=import-outside-toplevel
  from optimizer import build_optimizer  # pylint: disable=import-outside-toplevel
  from lr_scheduler import build_scheduler  # pylint: disable=import-outside-toplevel
  from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD  # pylint: disable=import-outside-toplevel
  from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  model = build_model(config)
  initial = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
  model.double()
  optimizer = build_optimizer(config, model)
  lr_scheduler = build_scheduler(config, optimizer, MICRO_PER_EPOCH // ACCUMULATION)
  mixup_fn = make_mixup(config)
  smoothing_loss = LabelSmoothingCrossEntropy(smoothing=config.MODEL.LABEL_SMOOTHING)
  soft_loss = SoftTargetCrossEntropy()

  rng = np.random.RandomState(0)
  num_micro = EPOCHS * MICRO_PER_EPOCH
  images = rng.randint(0, 256, (num_micro, MICRO_BATCH, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
  labels = rng.randint(0, NUM_CLASSES, (num_micro, MICRO_BATCH)).astype(np.int32)
  mean = torch.tensor(IMAGENET_DEFAULT_MEAN, dtype=torch.float64)[:, None, None]
  std = torch.tensor(IMAGENET_DEFAULT_STD, dtype=torch.float64)[:, None, None]
  mixed_micro = [ACCUMULATION * (MIXED_UPDATE - 1) + i for i in range(ACCUMULATION)]
  seeds = [seed_for(mixup_fn, True, 0)]
  seeds.append(seed_for(mixup_fn, False, seeds[0] + 1))
  mixed_images, mixed_targets = [], []

  lrs, losses, grad_norms = [], [], []
  update_loss = 0.0
  for epoch in range(EPOCHS):  # main.train_one_epoch
    model.train()
    optimizer.zero_grad()
    num_steps = MICRO_PER_EPOCH
    for idx in range(num_steps):
      m = epoch * num_steps + idx
      # ToTensor + Normalize of data/build.py, in float64.
      samples = (torch.from_numpy(images[m]).permute(0, 3, 1, 2).double() / 255 - mean) / std
      targets = torch.from_numpy(labels[m]).long()
      if m in mixed_micro:
        np.random.seed(seeds[mixed_micro.index(m)])
        samples, targets = mixup_fn(samples, targets)
        mixed_images.append(samples.permute(0, 2, 3, 1).numpy().astype(np.float32))
        mixed_targets.append(targets.numpy())
        samples = torch.from_numpy(mixed_images[-1]).permute(0, 3, 1, 2).double()
        loss = soft_loss(model(samples), targets)
      else:
        loss = smoothing_loss(model(samples), targets)
      loss = loss / config.TRAIN.ACCUMULATION_STEPS
      loss.backward()
      update_loss += loss.item()
      if (idx + 1) % config.TRAIN.ACCUMULATION_STEPS == 0:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.TRAIN.CLIP_GRAD)
        lrs.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        optimizer.zero_grad()
        lr_scheduler.step_update((epoch * num_steps + idx) // config.TRAIN.ACCUMULATION_STEPS)
        losses.append(update_loss)
        grad_norms.append(float(norm))
        update_loss = 0.0

  final = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
  out = {
      'num_classes': NUM_CLASSES, 'micro_batch': MICRO_BATCH, 'accumulation': ACCUMULATION,
      'updates_per_epoch': MICRO_PER_EPOCH // ACCUMULATION, 'epochs': EPOCHS,
      'base_lr': 0.064, 'warmup_lr': 6.4e-5, 'min_lr': 6.4e-4, 'warmup_epochs': 1.0,
      'weight_decay': config.TRAIN.WEIGHT_DECAY, 'clip_grad': config.TRAIN.CLIP_GRAD,
      'label_smoothing': config.MODEL.LABEL_SMOOTHING,
      'embed_dims': np.asarray(config.MODEL.SMT.EMBED_DIMS),
      'mlp_ratios': np.asarray(config.MODEL.SMT.MLP_RATIOS),
      'depths': np.asarray(config.MODEL.SMT.DEPTHS), 'head_conv': config.MODEL.SMT.HEAD_CONV,
      'images': images, 'labels': labels, 'mixed_micro': np.asarray(mixed_micro),
      'mixed_images': np.stack(mixed_images), 'mixed_targets': np.stack(mixed_targets),
      'lr': np.asarray(lrs), 'loss': np.asarray(losses), 'grad_norm': np.asarray(grad_norms),
  }
  out.update({f'initial/{k}': v for k, v in initial.items()})
  out.update({f'final/{k}': v.astype(v.dtype if v.dtype == np.int64 else np.float32)
              for k, v in final.items()})
  np.savez_compressed(os.path.join(args.out, 'trajectory.npz'), **out)
  np.savez_compressed(os.path.join(args.out, 'mixup_draws.npz'), **mixup_draws(mixup_fn))
  print('lr', np.asarray(lrs))
  print('loss', np.asarray(losses))
  print('grad_norm', np.asarray(grad_norms))


if __name__ == '__main__':
  main()
