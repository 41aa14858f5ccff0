"""SMT-S on ImageNet-1K from scratch: the official recipe (300 epochs, batch 1024, AdamW).

    python -m smt_jax.main --config=configs/smt_s.py --workdir=$WORKDIR \
        --config.data_dir=$TFDS_DATA_DIR

Expect about 83.7% top-1 / 96.5% top-5 (eval/top1 ~ 0.837), the official SMT-S result.
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model.name = 'smt_s'
  config.model.drop_path_rate = 0.2
  config.model.dtype = 'bfloat16'
  return config
