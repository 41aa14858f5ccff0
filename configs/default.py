"""Shared defaults for every recipe: the official SMT ImageNet-1K recipe.

Recipes in this folder start from `get_config()` here and change only what differs.
Every field can be overridden on the command line, e.g. `--config.batch_size=4096`.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  # Model: `name` is a variant of `smt_jax.models.create_model`; any other field here
  # overrides the matching module field (e.g. `config.model.drop_path_rate`).
  config.model = ml_collections.ConfigDict()
  config.model.name = 'smt_t'
  config.model.drop_path_rate = 0.1

  # Data.
  config.dataset = 'imagenet2012'   # a TFDS name, or 'folder' for an image-folder tree
  config.data_dir = None            # TFDS data_dir, or the image-folder root
  config.image_size = 224
  config.batch_size = 1024          # global, across all processes and devices
  config.seed = 0

  # Schedule.
  config.num_epochs = 300
  config.num_train_steps = -1       # > 0 overrides num_epochs
  config.log_every_steps = 100
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000

  config.init_from = None
  config.eval_only = False
  return config
