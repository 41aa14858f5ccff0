"""Defaults of `config.aug`: the official SMT ImageNet-1K augmentation recipe.

The reference is timm's `create_transform` with `rand-m9-mstd0.5-inc1`, `reprob=0.25`,
`remode='pixel'` and timm's `Mixup`, as the official SMT code calls them. Every part can be
switched off from the command line, e.g. `--config.aug.randaugment_num_ops=0`.
"""
import ml_collections


def default_aug_config() -> ml_collections.ConfigDict:
  aug = ml_collections.ConfigDict()

  # Host, per image: random resized crop (bicubic) to `config.image_size`, horizontal flip.
  # With `random_resized_crop=False` training images get the evaluation resize and crop.
  aug.random_resized_crop = True
  aug.crop_scale = (0.08, 1.0)
  aug.crop_ratio = (3 / 4, 4 / 3)
  aug.hflip = True

  # Host, per image: RandAugment. `num_ops=0` switches it off. Each of the `num_ops` ops is
  # drawn uniformly with replacement and applied with probability `op_prob`, at magnitude
  # N(magnitude, magnitude_std) clipped to [0, 10]. `increasing` picks timm's op set whose
  # strength grows with the magnitude (the 'inc1' of the official recipe).
  aug.randaugment_num_ops = 2
  aug.randaugment_magnitude = 9.0
  aug.randaugment_magnitude_std = 0.5
  aug.randaugment_increasing = True
  aug.randaugment_op_prob = 0.5

  # Device, per image, after normalization: random erasing of one box filled with
  # per-pixel standard normal noise ('pixel' mode). `reprob=0` switches it off.
  aug.reprob = 0.25

  # Device, per batch: with probability `mixup_prob` the batch is mixed, by CutMix with
  # probability `mixup_switch_prob` else by Mixup, one lambda per batch. An alpha of 0
  # switches that method off; both 0 switches mixing off. Label smoothing is folded into the
  # soft targets either way.
  aug.mixup_alpha = 0.2
  aug.cutmix_alpha = 1.0
  aug.mixup_prob = 1.0
  aug.mixup_switch_prob = 0.5
  aug.label_smoothing = 0.1

  # Evaluation: resize the shorter side to image_size / eval_crop_pct (bicubic) and take the
  # central image_size square. `eval_center_crop=False` resizes straight to a square with no
  # crop, as the official code does for the 384 fine-tune.
  aug.eval_crop_pct = 0.875
  aug.eval_center_crop = True
  return aug
