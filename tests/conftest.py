"""Shared fixtures: one persistent XLA compilation cache, compiling with most optimizations
off, the official-code test vectors, the `cpu_only` marker, and an SMT-T release file served
by a local HTTP server as the official release page.

Tests marked `cpu_only` check XLA:CPU internals (compiled HLO text, scratch memory, the CPU
compiler options); on any other default backend they are skipped. Every other test runs on
whatever backend JAX finds.

The cache directory is chosen once per test run, before the xdist workers start, and
passed to every worker and child process through JAX_COMPILATION_CACHE_DIR: a program
that one of them compiled (a model's init, a training step) is then read back by the
others instead of being compiled again. A directory already set in the environment is
used as it is and kept.
"""
import os
import shutil
import tempfile

import pytest

import compilation
from release_server import ReleaseServer
from testvectors import CASES, Vector

_CACHE_ENV = 'JAX_COMPILATION_CACHE_DIR'


def pytest_configure(config):
  if _CACHE_ENV not in os.environ and not hasattr(config, 'workerinput'):
    config.smt_jax_cache = tempfile.mkdtemp(prefix='smt-jax-xla-cache-')
    os.environ[_CACHE_ENV] = config.smt_jax_cache


def pytest_collection_modifyitems(config, items):
  del config
  marked = [item for item in items if item.get_closest_marker('cpu_only')]
  if not marked:
    return
  import jax  # pylint: disable=import-outside-toplevel
  backend = jax.default_backend()
  if backend != 'cpu':
    skip = pytest.mark.skip(reason=f'checks XLA:CPU internals; the default backend is {backend}')
    for item in marked:
      item.add_marker(skip)


def pytest_unconfigure(config):
  cache = getattr(config, 'smt_jax_cache', None)
  if cache:
    shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope='session', autouse=True)
def compilation_cache() -> str:
  """The run's cache directory, also for JAX already imported when it was chosen."""
  import jax  # pylint: disable=import-outside-toplevel
  cache = os.environ[_CACHE_ENV]
  jax.config.update('jax_compilation_cache_dir', cache)
  return cache


@pytest.fixture
def fast_compilation():
  """Most XLA optimizations off for one test (compilation.py)."""
  with compilation.most_optimizations_off():
    yield


@pytest.fixture(scope='session', params=CASES)
def vector(request):
  return Vector(request.param)


@pytest.fixture(scope='session')
def release_file(tmp_path_factory):
  """An SMT-T checkpoint laid out like the official smt_tiny.pth (random weights)."""
  # pylint: disable=import-outside-toplevel
  import jax
  import numpy as np
  import torch
  from smt_jax import convert
  from smt_jax.models import abstract_variables, create_model
  model = create_model('smt_t')
  rng = np.random.default_rng(0)
  abstract = abstract_variables(model)
  variables = jax.tree.map(lambda a: (0.02 * rng.normal(size=a.shape)).astype(a.dtype),
                           abstract)
  variables['batch_stats'] = jax.tree.map(np.ones_like, variables['batch_stats'])
  state_dict = convert.flax_to_torch(variables)
  path = tmp_path_factory.mktemp('release') / 'smt_tiny.pth'
  torch.save({'model': {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}},
             path)
  return path


@pytest.fixture
def release_server(release_file, tmp_path, monkeypatch):
  """Serves smt_tiny.pth at SMT_JAX_WEIGHTS_URL, with an empty cache at SMT_JAX_CACHE."""
  folder = tmp_path / 'release_page'
  folder.mkdir()
  os.symlink(release_file, folder / release_file.name)
  with ReleaseServer(str(folder)) as server:
    monkeypatch.setenv('SMT_JAX_WEIGHTS_URL', server.url)
    monkeypatch.setenv('SMT_JAX_CACHE', str(tmp_path / 'cache'))
    yield server
