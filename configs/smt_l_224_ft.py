"""SMT-L fine-tuned from ImageNet-22K to ImageNet-1K at 224x224 (30 epochs, batch 512).

    python -m smt_jax.main --config=configs/smt_l_224_ft.py --workdir=$WORKDIR \
        --config.data_dir=$TFDS_DATA_DIR --config.init_from=smt_l_22k

`init_from` is the official 22K weights by name (downloaded on first use) or a weights
checkpoint: the 22K run's final weights (write them with smt_jax.weights.save). The head keeps its rows
of the 1,000 ImageNet-1K classes in the official 22K label order, as the official
fine-tuning does (smt_l_22k.py's head is in another order: docs/recipe.md). The official
config gives no batch; this is the 384 run's 8 x 64, so the learning rates are the config's
own (x 512 / 512). Evaluation resizes and centre-crops as every 224 recipe. Expect about
87.1% top-1 / 98.1% top-5. smt_l_384_ft.py is this recipe at 384x384.
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model.name = 'smt_l'
  config.model.drop_path_rate = 0.1
  config.model.dtype = 'bfloat16'
  config.batch_size = 512
  config.num_epochs = 30
  config.optim.base_lr = 1e-5
  config.optim.warmup_lr = 1e-8
  config.optim.min_lr = 1e-7
  config.optim.warmup_epochs = 5.0
  config.eval_every_steps = 2500
  config.checkpoint_every_steps = 2500
  return config
