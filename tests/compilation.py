"""Compiling with most XLA optimizations off, for tests whose checks do not depend on the
compiled code's speed: LLVM's optimizations are about two thirds of the CPU compile time of
the test programs."""
import contextlib

import jax


@contextlib.contextmanager
def most_optimizations_off():
  """Turns jax_disable_most_optimizations on, and back to what it was on exit."""
  before = jax.config.read('jax_disable_most_optimizations')
  jax.config.update('jax_disable_most_optimizations', True)
  try:
    yield
  finally:
    jax.config.update('jax_disable_most_optimizations', before)
