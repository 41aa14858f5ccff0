"""Fixtures for the training tests.

Compiled programs go to the run's persistent compilation cache (tests/conftest.py), so a
program compiled once is not compiled again by the runs that resume, get killed or run
beside it.

XLA compiles with most optimizations off (jax_disable_most_optimizations, in these tests
and their children alike, so all compile identical code): LLVM's optimizations are about
two thirds of the CPU compile time of these programs and buy nothing for runs this short.
"""
import os

import jax
import pytest

import train_helpers


@pytest.fixture(scope='session', autouse=True)
def fast_compilation():
  jax.config.update('jax_disable_most_optimizations', True)
  yield
  jax.config.update('jax_disable_most_optimizations',
                    os.environ.get('JAX_DISABLE_MOST_OPTIMIZATIONS', '0').lower() in ('1', 'true'))


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
  state, metrics = train_and_evaluate(config, workdir)
  return config, workdir, jax.device_get(state), metrics
