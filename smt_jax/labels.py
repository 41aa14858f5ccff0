"""ImageNet labels: the 1K class names, and where the 1K classes sit in the 22K head.

Both in ImageNet-1K label order, the sorted synset ids.
"""
import importlib.resources
from typing import List

import numpy as np

IMAGENET_22K_CLASSES = 21841


def imagenet_class_names() -> List[str]:
  """The 1,000 names, read from the copy that tensorflow-datasets ships (no download)."""
  from tensorflow_datasets.datasets.siscore import labels  # pylint: disable=g-import-not-at-top
  names = list(labels.IMAGENET_LABELS_LIST)
  if len(names) != 1000:
    raise RuntimeError(f'Expected 1000 ImageNet class names from tensorflow-datasets, '
                       f'found {len(names)}.')
  return names


def imagenet22k_rows_of_1k() -> np.ndarray:
  """(1000,) int: the row of the official 21,841-class head holding each 1K class.

  The official fine-tuning from 22K to 1K keeps these rows of the head. Written by
  smt_jax/data/make_imagenet22k_to_1k.py, which says how the rows are derived.
  """
  text = (importlib.resources.files('smt_jax') / 'data' / 'imagenet22k_to_1k.txt').read_text()
  return np.array(text.split(), np.int64)
