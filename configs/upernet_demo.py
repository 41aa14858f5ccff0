"""The segmentation demo: a small SMT + UPerNet learns to segment generated shapes on a CPU.

    python -m smt_jax.main --config=configs/upernet_demo.py --workdir=/tmp/upernet_demo

The `seg_shapes` dataset (smt_jax.data.shapes: discs, squares and triangles on noise,
96x128, 480 training and 48 validation scenes) is built on first use in WORKDIR/data and
read like ADE20K: the official recipe's transforms at a quarter of its sizes, the same
loss, evaluation and checkpoints. notebooks/segmentation.ipynb shows the masks.
"""
from configs import upernet_smt_s_ade20k


def get_config():
  config = upernet_smt_s_ade20k.get_config()
  config.dataset = 'seg_shapes'
  config.model.name = 'smt_t'
  config.model.embed_dims = (32, 64, 128, 256)
  config.model.depths = (1, 1, 2, 1)
  config.model.drop_path_rate = 0.0
  config.head.channels = 64
  config.head.aux_channels = 32

  config.aug.img_scale = (128, 96)  # the scenes' own size; training rescales by 0.5-2.0
  config.aug.crop_size = (64, 64)
  config.batch_size = 16
  config.eval_batch_size = 16

  config.optim.base_lr = 1e-3
  config.optim.warmup_steps = 30
  config.num_train_steps = 300
  config.log_every_steps = 25
  config.eval_every_steps = 150
  config.checkpoint_every_steps = 150
  return config
