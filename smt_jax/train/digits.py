"""scikit-learn's handwritten digits written once as an image folder, for the offline demo.

The 1,797 8x8 grey digits ship inside scikit-learn, so the demo needs no network. They are
upsampled to RGB PNGs in `root/{train,val}/<digit>/` so that the demo reads them through
the same image-folder source and augmentation as real data. The held-out split is a fixed,
class-stratified 1 in 6.
"""
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

NAME = 'sklearn_digits'
SIZE = 32
HOLDOUT_EVERY = 6


def write_folder(root: str) -> str:
  """Writes the folder unless it is complete already; returns `root`."""
  root = os.path.abspath(os.path.expanduser(root))
  done = os.path.join(root, '.complete')
  if os.path.exists(done):
    return root
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top

  digits = load_digits()
  parent = os.path.dirname(root)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(dir=parent, prefix='.digits-')
  seen = np.zeros(10, int)
  for index, (image, label) in enumerate(zip(digits.images, digits.target)):
    split = 'val' if seen[label] % HOLDOUT_EVERY == 0 else 'train'
    seen[label] += 1
    pixels = np.round(image / 16.0 * 255.0).astype(np.uint8)
    picture = Image.fromarray(pixels).resize((SIZE, SIZE), Image.BICUBIC).convert('RGB')
    folder = os.path.join(staging, split, str(label))
    os.makedirs(folder, exist_ok=True)
    picture.save(os.path.join(folder, f'{index:04d}.png'))
  open(os.path.join(staging, '.complete'), 'w').close()
  # Another process may have finished first; either complete copy will do.
  try:
    os.rename(staging, root)
  except OSError:
    shutil.rmtree(staging, ignore_errors=True)
  return root
