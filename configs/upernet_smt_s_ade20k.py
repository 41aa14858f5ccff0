"""UPerNet + SMT-S on ADE20K, 512x512 crops, 160k iterations: the official segmentation
recipe (AFeng-x/SMT segmentation/configs/upernet_smt_512x512_160k_ade20k.py on mmseg 0.x's
ade20k.py dataset and schedule_160k.py), reported at 49.2 mIoU single-scale.

    python -m smt_jax.main --config=configs/upernet_smt_s_ade20k.py --workdir=DIR \
        --config.data_dir=TFDS_DATA_DIR --config.init_from=smt_s

The dataset is the `ade20k` builder (python -m smt_jax.tools.build_ade20k); the backbone
starts from ImageNet-1K weights (`init_from`: a release name or a weights directory). The
fields the classification recipe (configs/default.py) has and this one does not use are
removed, so a mistyped override fails.
"""
import ml_collections

from configs import default
from smt_jax.data.seg_augment import default_seg_aug_config


def get_config():
  config = default.get_config()
  config.task = 'segmentation'
  config.dataset = 'ade20k'
  del config.image_size  # crops and test sizes are in config.aug

  config.model.name = 'smt_s'  # the backbone; the SMT fields as in classification
  config.model.drop_path_rate = 0.2
  config.head = ml_collections.ConfigDict()
  config.head.channels = 512  # UPerHead
  config.head.aux_channels = 256  # FCNHead on stride 16
  config.head.dropout = 0.1  # before each classifier

  # Cross-entropy on logits upsampled (bilinear) to the 512x512 labels, summed over the
  # non-ignored pixels and divided by all of them, ignored ones included (mmseg 0.x
  # CrossEntropyLoss, avg_non_ignore=False); the two heads' losses weighted and added.
  config.loss = ml_collections.ConfigDict()
  config.loss.decode_weight = 1.0
  config.loss.aux_weight = 0.4

  config.batch_size = 16  # global: 8 GPUs x 2 in the official runs
  # Evaluation batches hold images of one size; None: one image per device, as mmseg.
  config.eval_batch_size = None
  config.num_train_steps = 160_000
  config.aug = default_seg_aug_config()

  # AdamW with weight decay on every parameter (the recipe sets no exceptions), no
  # clipping, and no scaling of the rate by the batch size.
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
  config.optim.clip_grad_norm = None
  config.optim.grad_accum_steps = 1

  config.eval = ml_collections.ConfigDict()
  config.eval.mode = 'whole'  # the official test_cfg; 'slide' uses crop and stride
  config.eval.crop = (512, 512)
  config.eval.stride = (341, 341)
  config.log_every_steps = 50
  config.eval_every_steps = 16_000
  config.checkpoint_every_steps = 16_000
  config.keep_checkpoints = 3  # the last ones, plus the best by eval/mIoU
  return config
