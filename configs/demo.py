"""The offline demo: a small SMT learns scikit-learn's handwritten digits on a laptop CPU.

    python -m smt_jax.main --config=configs/demo.py --workdir=/tmp/smt_demo

The 1,797 digits ship inside scikit-learn; on first use they are written as an image folder
(WORKDIR/data/{train,val}/<digit>/*.png, 32x32 RGB, 1 in 6 held out), then read through the
same image-folder source, augmentation and train step as ImageNet. Expect at least 90%
held-out top-1 (eval/top1 >= 0.90) in under 5 minutes on 2 CPU cores; TensorBoard logs
and checkpoints land in the workdir (`tensorboard --logdir=/tmp/smt_demo`).
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model.name = 'smt_t'
  config.model.embed_dims = (32, 64, 128, 256)
  config.model.depths = (1, 1, 2, 1)
  config.model.drop_path_rate = 0.0

  config.dataset = 'sklearn_digits'
  config.image_size = 32
  config.batch_size = 64
  config.eval_batch_size = 128

  # Digits are not ImageNet photos: no flips, milder crops, no RandAugment or erasing,
  # and no Mixup/CutMix on so short a run.
  config.aug.crop_scale = (0.5, 1.0)
  config.aug.hflip = False
  config.aug.randaugment_num_ops = 0
  config.aug.reprob = 0.0
  config.aug.mixup_alpha = 0.0
  config.aug.cutmix_alpha = 0.0
  config.aug.eval_crop_pct = 1.0

  config.optim.base_lr = 8e-3       # x 64 / 512 = 1e-3
  config.optim.warmup_epochs = 1.0
  config.num_epochs = 10
  config.log_every_steps = 20
  config.eval_every_steps = 100
  config.checkpoint_every_steps = 100
  return config
