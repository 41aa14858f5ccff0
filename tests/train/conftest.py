"""Fixtures for the training tests.

Compiled programs go to the run's persistent compilation cache (tests/conftest.py), so a
program compiled once is not compiled again by the runs that resume, get killed or run
beside it; multi-process runs compile for themselves (train_helpers.child_env says why).

XLA compiles with most optimizations off (tests/compilation.py), in these tests and their
children alike (train_helpers.child_env), so all compile identical code.
"""
import jax
import pytest

import compilation
import train_helpers


@pytest.fixture(autouse=True)
def _every_test_compiles_fast(fast_compilation):
  del fast_compilation
  yield


@pytest.fixture(scope='session')
def image_folder(tmp_path_factory) -> str:
  """32 training and 16 validation images of 4 classes."""
  return train_helpers.write_folder(tmp_path_factory.mktemp('folder'), 8, 4)


@pytest.fixture(scope='session')
def trained(image_folder, tmp_path_factory):
  """The reference run of `tiny_config`, uninterrupted, on one device in this process."""
  from smt_jax.train import train_and_evaluate  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp('reference'))
  config = train_helpers.tiny_config(image_folder)
  with compilation.most_optimizations_off():  # as every training test
    state, metrics = train_and_evaluate(config, workdir)
  return config, workdir, jax.device_get(state), metrics
