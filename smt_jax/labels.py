"""Human-readable ImageNet-1K class names, in label order (the sorted synset ids)."""
from typing import List


def imagenet_class_names() -> List[str]:
  """The 1,000 names, read from the copy that tensorflow-datasets ships (no download)."""
  from tensorflow_datasets.datasets.siscore import labels  # pylint: disable=g-import-not-at-top
  names = list(labels.IMAGENET_LABELS_LIST)
  if len(names) != 1000:
    raise RuntimeError(f'Expected 1000 ImageNet class names from tensorflow-datasets, '
                       f'found {len(names)}.')
  return names
