"""SMT-L fine-tuned from ImageNet-22K to ImageNet-1K at 384x384 (30 epochs, batch 512).

    python -m smt_jax.main --config=configs/smt_l_384_ft.py --workdir=$WORKDIR \
        --config.data_dir=$TFDS_DATA_DIR --config.init_from=smt_l_22k

The 224 fine-tune (smt_l_224_ft.py: `init_from`, batch, epochs) at 384x384, with twice its
learning rates, and evaluation resized to 384x384 with no crop, as the official code does
at 384. The batch is the official run's 8 x 64, so the learning rates are the config's own
(x 512 / 512). Expect about 88.1% top-1 / 98.4% top-5.
"""
from configs import smt_l_224_ft


def get_config():
  config = smt_l_224_ft.get_config()
  config.image_size = 384
  config.aug.eval_center_crop = False
  config.optim.base_lr = 2e-5
  config.optim.warmup_lr = 2e-8
  config.optim.min_lr = 2e-7
  return config
