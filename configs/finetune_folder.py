"""Fine-tune official weights onto your own image-folder dataset.

    python -m smt_jax.main --config=configs/finetune_folder.py --workdir=$WORKDIR \
        --config.data_dir=/path/to/folder --config.init_from=smt_t

`init_from` names an official release (downloaded and converted on first use) or a
weights directory from smt_jax.convert.

The folder is DATA_DIR/train/<class>/*.jpg and DATA_DIR/val/<class>/*.jpg; the head is
re-initialized for its number of classes. Layer-wise lr decay keeps the early layers close to
the pretrained ones. Use `--config.model.name` to match the converted variant. What to
expect depends on the dataset; from ImageNet weights, small natural-image datasets
typically beat training from scratch by a wide margin within a few epochs.
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model.name = 'smt_t'
  config.model.drop_path_rate = 0.1
  config.dataset = 'folder'
  config.batch_size = 128
  config.num_epochs = 30
  config.optim.base_lr = 2e-4       # x 128 / 512 = 5e-5
  config.optim.warmup_lr = 2e-7
  config.optim.min_lr = 2e-6
  config.optim.warmup_epochs = 2.0
  config.optim.layer_decay = 0.75
  config.aug.mixup_prob = 0.5
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  return config
