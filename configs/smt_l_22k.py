"""SMT-L pretraining on ImageNet-22K (90 epochs, 5 warmup, batch 4096, drop path 0.1).

    python -m smt_jax.main --config=configs/smt_l_22k.py --workdir=$WORKDIR \
        --config.data_dir=/path/to/imagenet22k_folder --config.mesh.fsdp=8

ImageNet-22K is not in the TFDS catalog: give it as an image folder
(DATA_DIR/train/<wnid>/*.JPEG, optionally DATA_DIR/val/...); the 21,841 classes are
counted from the folder. The learning rates are the official config values (Swin's
22K recipe), which the code scales by 4096 / 512 like every recipe. Expect a checkpoint
that smt_l_224_ft.py and smt_l_384_ft.py fine-tune to about 87.1% and 88.1% top-1 on
ImageNet-1K. Its head is in the folder's sorted class order, not the official label order
that the fine-tunes' 1K rows assume (docs/recipe.md).
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model.name = 'smt_l'
  config.model.drop_path_rate = 0.1
  config.model.dtype = 'bfloat16'
  config.dataset = 'folder'
  config.batch_size = 4096
  config.num_epochs = 90
  config.optim.base_lr = 1.25e-4
  config.optim.warmup_lr = 1.25e-7
  config.optim.min_lr = 1.25e-6
  config.optim.warmup_epochs = 5.0
  config.eval_every_steps = 10000
  config.checkpoint_every_steps = 2000
  return config
