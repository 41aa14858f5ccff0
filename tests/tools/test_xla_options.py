"""The per-backend compiler options, and that the benchmark's steps are compiled with them."""
import jax.numpy as jnp
import pytest

from smt_jax.tools import bench
from smt_jax.train import xla_options
from smt_jax.models import create_model


def test_memory_optimized_scheduler_on_cpu_only():
  assert xla_options.compiler_options('cpu') == {
      'xla_cpu_scheduler_type': 'CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED'}
  assert xla_options.compiler_options('gpu') is None
  assert xla_options.compiler_options('tpu') is None


def _temp_bytes(compiled) -> int:
  return compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.cpu_only
def test_training_step_takes_less_scratch_memory_with_the_options():
  model = create_model('smt_t', depths=(1, 1, 2, 1))
  # Activations, which the scheduler orders, must outweigh the train state, which the
  # step's non-finite guard holds in two copies whatever the schedule: hence 4 images of
  # 128x128.
  batch = {'image': jnp.zeros((4, 128, 128, 3)), 'label': jnp.zeros((4,), jnp.int32)}
  step, state = bench.build_step(model, 'train')
  lowered = step.lower(state, batch)
  default = lowered.compile(
      compiler_options={'xla_cpu_scheduler_type': 'CPU_SCHEDULER_TYPE_DEFAULT'})
  with_options = lowered.compile()
  # The default scheduler gives 1.
  assert _temp_bytes(with_options) < 0.9 * _temp_bytes(default)
