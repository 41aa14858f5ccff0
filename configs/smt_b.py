"""SMT-B on ImageNet-1K from scratch: the official recipe (300 epochs, batch 1024, AdamW).

    python -m smt_jax.main --config=configs/smt_b.py --workdir=$WORKDIR \
        --config.data_dir=$TFDS_DATA_DIR

Expect about 84.3% top-1 / 96.9% top-5 (eval/top1 ~ 0.843), the official SMT-B result.
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model.name = 'smt_b'
  config.model.drop_path_rate = 0.3
  config.model.dtype = 'bfloat16'
  return config
