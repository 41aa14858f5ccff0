"""Shared defaults for every recipe: the official SMT ImageNet-1K recipe.

Recipes in this folder start from `get_config()` here and change only what differs.
Every field can be overridden on the command line, e.g. `--config.batch_size=4096`.
"""
import ml_collections

from smt_jax.data import default_aug_config


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # What is trained: 'classification' (this recipe) or 'segmentation' (UPerNet on SMT,
  # configs/upernet_*.py).
  config.task = 'classification'

  # Model: `name` is a variant of `smt_jax.models.create_model`; any other field here
  # overrides the matching module field (e.g. `config.model.drop_path_rate`). dtype is the
  # computation dtype ('bfloat16' for mixed precision); parameters stay float32.
  config.model = ml_collections.ConfigDict()
  config.model.name = 'smt_t'
  config.model.drop_path_rate = 0.1
  config.model.dtype = 'float32'
  config.model.ops = 'auto'         # how layers are computed: 'auto' (per backend), 'xla', 'cpu'
  config.model.remat = 'none'       # rematerialize blocks to save memory, e.g. 'full'

  # Data.
  config.dataset = 'imagenet2012'   # a TFDS name, 'folder' for an image-folder tree, or
                                    # 'sklearn_digits' (written as a folder on first use)
  # TFDS data_dir, or the image-folder root.
  config.data_dir = ml_collections.config_dict.placeholder(str)
  config.image_size = 224
  config.batch_size = 1024          # global, across all processes and devices
  config.eval_batch_size = ml_collections.config_dict.placeholder(int)  # None: batch_size
  config.seed = 0
  # Host input work: batches built at once in threads of each worker, and worker processes
  # per training process (0: the threads run in the training process itself).
  config.data_threads = 8
  config.data_workers = 0
  config.aug = default_aug_config()

  # Optimizer (AdamW). The three learning rates are multiplied by batch_size / 512.
  config.optim = ml_collections.ConfigDict()
  config.optim.base_lr = 1e-3
  config.optim.warmup_lr = 1e-7
  config.optim.min_lr = 1e-6
  config.optim.warmup_epochs = 5.0
  config.optim.weight_decay = 0.05  # not applied to 1-D parameters
  config.optim.clip_grad_norm = 5.0  # global norm; 0 or None: no clipping
  config.optim.b1 = 0.9
  config.optim.b2 = 0.999
  config.optim.eps = 1e-8
  config.optim.grad_accum_steps = 1  # micro-batches per step; batch_size stays the step's batch
  config.optim.layer_decay = ml_collections.config_dict.placeholder(float)  # e.g. 0.9
  config.optim.ema_decay = ml_collections.config_dict.placeholder(float)    # e.g. 0.9999

  # Device mesh: axis sizes, -1 = all remaining devices. The batch is split over both
  # axes; parameters and optimizer state of at least `min_shard_size` elements are split
  # over 'fsdp'. `rules` are (regex on leaf paths, 'fsdp' | 'replicate' | per-dim axes).
  config.mesh = ml_collections.ConfigDict()
  config.mesh.data = -1
  config.mesh.fsdp = 1
  config.mesh.min_shard_size = 2 ** 14
  config.mesh.rules = (('.*', 'fsdp'),)

  # Schedule.
  config.num_epochs = 300
  config.num_train_steps = -1       # > 0 overrides num_epochs
  config.log_every_steps = 100
  config.eval_every_steps = 5000    # <= 0: evaluate only at the end
  config.checkpoint_every_steps = 5000
  config.keep_checkpoints = 3       # the last ones, plus the best by eval/top1

  # Profiler: trace `profile_steps` steps starting `profile_first_step` steps into the run
  # (0 = off); view in TensorBoard's profile tab.
  config.profile_steps = 0
  config.profile_first_step = 10

  # Weights to start from: an official release name ('smt_t', ... see smt_jax.pretrained),
  # downloaded on first use, or a weights directory (smt_jax.convert, smt_jax.weights.save).
  config.init_from = ml_collections.config_dict.placeholder(str)
  config.eval_only = False
  return config
