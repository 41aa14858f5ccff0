"""UPerNet + SMT-S on ADE20K, 512x512 crops, 160k iterations: the official segmentation
recipe (AFeng-x/SMT segmentation/configs/upernet_smt_512x512_160k_ade20k.py on mmseg 0.x's
ade20k.py dataset and schedule_160k.py), reported at 49.2 mIoU single-scale.

The fields of that recipe, for a segmentation training loop; the classification entry point
does not run it yet. The learning rate is `smt_jax.train.optim.poly_schedule(base_lr,
num_train_steps, warmup_steps, warmup_ratio, power, min_lr)`; the transforms are
`smt_jax.data.seg_augment` with `aug`; the scores `smt_jax.train.seg_metrics`.
"""
import ml_collections

from smt_jax.data.seg_augment import default_seg_aug_config


def get_config():
  config = ml_collections.ConfigDict()
  config.dataset = 'ade20k'  # smt_jax.data.ade20k, built in ArrayRecord
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.num_classes = 150
  config.ignore_index = 255

  config.model = ml_collections.ConfigDict()
  config.model.name = 'smt_s'  # backbone, from ImageNet-1K weights (`init_from`)
  config.model.drop_path_rate = 0.2
  config.model.head_channels = 512  # UPerHead
  config.model.aux_channels = 256  # FCNHead on stride 16
  config.model.dropout = 0.1  # before each classifier
  config.model.dtype = 'float32'
  config.init_from = ml_collections.config_dict.placeholder(str)

  config.loss = ml_collections.ConfigDict()
  # Cross-entropy on logits upsampled (bilinear) to the 512x512 labels, summed over the
  # non-ignored pixels and divided by all of them, ignored ones included (mmseg 0.x
  # CrossEntropyLoss, avg_non_ignore=False); the two heads' losses weighted and added.
  config.loss.decode_weight = 1.0
  config.loss.aux_weight = 0.4

  config.batch_size = 16  # global: 8 GPUs x 2 in the official runs
  config.num_train_steps = 160_000
  config.seed = 0
  config.aug = default_seg_aug_config()

  # AdamW with weight decay on every parameter (the recipe sets no exceptions), no clipping.
  config.optim = ml_collections.ConfigDict()
  config.optim.base_lr = 6e-5
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.eps = 1e-8
  config.optim.weight_decay = 0.01
  config.optim.warmup_steps = 1500  # linear, from base_lr x warmup_ratio
  config.optim.warmup_ratio = 1e-6
  config.optim.power = 1.0  # poly decay to min_lr at num_train_steps
  config.optim.min_lr = 0.0

  config.eval = ml_collections.ConfigDict()
  config.eval.mode = 'whole'  # the official test_cfg; 'slide' uses crop and stride
  config.eval.crop = (512, 512)
  config.eval.stride = (341, 341)
  config.eval_every_steps = 16_000
  config.checkpoint_every_steps = 16_000
  return config
