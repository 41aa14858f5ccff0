"""SMT-T on ImageNet-1K from scratch: the official recipe (300 epochs, batch 1024, AdamW).

    python -m smt_jax.main --config=configs/smt_t.py --workdir=$WORKDIR \
        --config.data_dir=$TFDS_DATA_DIR

Expect about 82.2% top-1 / 96.0% top-5 (eval/top1 ~ 0.822), the official SMT-T result.
Parameters stay float32; computation is bfloat16 (the official code uses AMP).
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model.name = 'smt_t'
  config.model.drop_path_rate = 0.1
  config.model.dtype = 'bfloat16'
  return config
