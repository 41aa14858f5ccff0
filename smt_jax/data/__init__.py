"""Input pipeline: random-access sources -> a stream fixed by (seed, step) -> global arrays.

Host side (Grain, per process): `TrainIterator`, `EvalIterator`. Device side (JAX, inside
the jitted steps): `make_prepare`, `prepare_eval`. Settings: `config.dataset`,
`config.data_dir`, `config.image_size`, `config.batch_size`, `config.seed`,
`config.data_threads`, `config.data_workers` and `config.aug` (defaults in
`default_aug_config`).
"""
from smt_jax.data.aug_config import default_aug_config
from smt_jax.data.device_augment import make_prepare
from smt_jax.data.device_augment import prepare_eval
from smt_jax.data.iterators import CorruptImageError
from smt_jax.data.iterators import EvalIterator
from smt_jax.data.iterators import TrainIterator
from smt_jax.data.iterators import check_resumable
from smt_jax.data.iterators import stream_identity
from smt_jax.data.iterators import to_global_arrays
from smt_jax.data.sources import DatasetInfo
from smt_jax.data.sources import DatasetNotFoundError
from smt_jax.data.sources import dataset_info

__all__ = [
    'CorruptImageError', 'DatasetInfo', 'DatasetNotFoundError', 'EvalIterator',
    'TrainIterator', 'check_resumable', 'dataset_info', 'default_aug_config', 'make_prepare',
    'prepare_eval', 'stream_identity', 'to_global_arrays',
]
