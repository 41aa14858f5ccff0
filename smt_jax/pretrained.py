"""Official SMT weights by release name: downloaded once, converted once, then read offline.

    model, variables = smt_jax.weights.pretrained('smt_t')

The first call downloads the release file (e.g. smt_tiny.pth) into the cache directory,
converts it strictly (see smt_jax.convert) and keeps both the file and the converted
orbax weights directory beside it (CACHE/smt_tiny.pth, CACHE/smt_tiny). Later calls read
that directory without touching the network. The cache is `cache_dir=` if given, else
$SMT_JAX_CACHE, else $XDG_CACHE_HOME/smt_jax, else ~/.cache/smt_jax; the download
location is $SMT_JAX_WEIGHTS_URL (a mirror) if set, else the official release page.
"""
import contextlib
import dataclasses
import fcntl
import os
import shutil
import tempfile
from typing import Any, Dict, Optional, Tuple

from smt_jax import convert
from smt_jax import download
from smt_jax import labels
from smt_jax import weights
from smt_jax.models import SMT, create_model

OFFICIAL_URL = 'https://github.com/AFeng-x/SMT/releases/download/v1.0.0/'
URL_ENV = 'SMT_JAX_WEIGHTS_URL'
CACHE_ENV = 'SMT_JAX_CACHE'


@dataclasses.dataclass(frozen=True)
class Release:
  """One official weights file and how to run it."""
  file: str
  variant: str       # smt_jax.models.create_model name
  num_classes: int
  image_size: int    # the input size it was trained (or fine-tuned) and evaluated at
  eval_crop: bool    # evaluation center-crops (224) or resizes the whole image (384)


RELEASES = {
    'smt_t': Release('smt_tiny.pth', 'smt_t', 1000, 224, True),
    'smt_s': Release('smt_small.pth', 'smt_s', 1000, 224, True),
    'smt_b': Release('smt_base.pth', 'smt_b', 1000, 224, True),
    'smt_l_22k': Release('smt_large_22k.pth', 'smt_l', labels.IMAGENET_22K_CLASSES, 224, True),
    'smt_l_22k_224_ft': Release('smt_large_22k_224_ft.pth', 'smt_l', 1000, 224, True),
    'smt_l_22k_384_ft': Release('smt_large_22k_384_ft.pth', 'smt_l', 1000, 384, False),
}


class PretrainedError(ValueError):
  """Release weights are unavailable; the message says why and how to get them by hand."""


def release(name: str) -> Release:
  if name not in RELEASES:
    raise PretrainedError(f'No pretrained weights named {name!r}; the names are '
                          f'{", ".join(RELEASES)}.')
  return RELEASES[name]


def default_cache_dir() -> str:
  if os.environ.get(CACHE_ENV):
    return os.path.expanduser(os.environ[CACHE_ENV])
  xdg = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(xdg, 'smt_jax')


def url(name: str) -> str:
  base = os.environ.get(URL_ENV) or OFFICIAL_URL
  return base.rstrip('/') + '/' + release(name).file


def weights_dir(name: str, cache_dir: Optional[str] = None, progress: bool = True) -> str:
  """The converted orbax weights directory of release `name`, fetched and converted if new."""
  entry = release(name)
  root = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
  file_path = os.path.join(root, entry.file)
  converted = os.path.splitext(file_path)[0]
  if os.path.isdir(converted):
    return converted
  os.makedirs(root, exist_ok=True)
  with _locked(file_path):  # processes sharing the cache fetch and convert it once
    if not os.path.isdir(converted):
      if not os.path.isfile(file_path):
        try:
          download.download(url(name), file_path, progress=progress)
        except download.DownloadError as e:
          raise PretrainedError(f'{e} Download {entry.file} by hand and put it at {file_path} '
                                '(or set SMT_JAX_WEIGHTS_URL to a mirror), then run again.'
                                ) from None
      _convert(name, file_path, converted)
  return converted


def load(name: str, cache_dir: Optional[str] = None, progress: bool = True,
         **runtime) -> Tuple[SMT, Dict[str, Any]]:
  """(model, variables) of release `name`; `runtime` as for smt_jax.weights.load."""
  return weights.load(weights_dir(name, cache_dir, progress), **runtime)


def _convert(name: str, file_path: str, converted: str) -> None:
  """Writes `converted` from the release file, or removes the file if it is not the release."""
  entry = release(name)
  model = create_model(entry.variant, num_classes=entry.num_classes)
  try:
    variables = convert.torch_to_flax(convert.load_state_dict(file_path), model)
  except ValueError as e:  # not a checkpoint, or not this model's (CheckpointMismatchError)
    os.remove(file_path)  # so that the next call downloads it again
    raise PretrainedError(f'{url(name)} did not give the {name} checkpoint, so it was not '
                          f'kept: {e}') from None
  staging = tempfile.mkdtemp(prefix=f'.{os.path.basename(converted)}-',
                             dir=os.path.dirname(converted))
  try:
    weights.save(os.path.join(staging, 'weights'), variables, model)
    os.rename(os.path.join(staging, 'weights'), converted)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _locked(path: str):
  with open(path + '.lock', 'w') as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
