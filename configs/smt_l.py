"""SMT-L on ImageNet-1K from scratch (300 epochs, batch 1024, drop path 0.4, layer scale).

    python -m smt_jax.main --config=configs/smt_l.py --workdir=$WORKDIR \
        --config.data_dir=$TFDS_DATA_DIR --config.mesh.fsdp=8

The official results for SMT-L are with ImageNet-22K pretraining (smt_l_22k.py, then
smt_l_384_ft.py); from scratch, expect at least SMT-B's 84.3% top-1 (not reproduced
here). With FSDP (`--config.mesh.fsdp`) parameters and Adam moments are split over devices.
"""
from configs import default


def get_config():
  config = default.get_config()
  config.model.name = 'smt_l'
  config.model.drop_path_rate = 0.4
  config.model.dtype = 'bfloat16'
  return config
