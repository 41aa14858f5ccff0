"""Throughput benchmark of an SMT variant on the default JAX device.

    python -m smt_jax.bench --model=smt_t --batch=32 --mode=infer|train \
        [--image_size=224] [--dtype=float32|bfloat16] [--remat=none|full|dots] \
        [--noretain_host_memory]

Compiles one step, runs `--warmup` untimed steps, then times `--steps` steps (each waited
for before the next starts) and prints one JSON line: images/s, ms per step, achieved
TFLOP/s (FLOPs from XLA's cost analysis of the compiled step), peak memory (host RSS on
CPU, device memory on accelerators) and the device. `mode=train` times forward, backward
and the AdamW update in one jitted step whose state is donated, as a training loop runs
it. Random inputs: speed does not depend on the pixel values.
"""
import ctypes
import json
import resource
import sys
import time
from typing import Any, Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import optax

from smt_jax import xla_options
from smt_jax.models import create_model

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def _flops(compiled) -> float:
  """FLOPs of one call of a compiled function, per XLA's cost analysis (0 if unknown)."""
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):   # older jax returns one dict per program
    cost = cost[0] if cost else {}
  return float((cost or {}).get('flops', 0.0))


def peak_memory_gb(device: jax.Device) -> float:
  """Peak device memory on accelerators; peak resident host memory on CPU."""
  if device.platform != 'cpu':
    stats = device.memory_stats() or {}
    if 'peak_bytes_in_use' in stats:
      return stats['peak_bytes_in_use'] / 2**30
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # KiB on Linux


def retain_host_memory() -> bool:
  """Makes glibc keep freed memory instead of returning it to the OS (CPU backend).

  XLA:CPU allocates each step's scratch memory anew as one block (6.1 GB for an SMT-T
  training step at batch 32); glibc serves it with a fresh mmap and unmaps it on free, so
  every step page-faults and zeroes all of it again (about 40% of an SMT-T inference step
  on 2 cores was kernel time; training ran at half the speed). With mmap off, no trimming
  and a single arena, the block stays mapped and the next step reuses it.

  The heap then keeps its high-water mark, so two scratch blocks must never be live at
  once. With asynchronous dispatch XLA:CPU frees a step's scratch on a worker thread just
  after the step's outputs are ready; a next step dispatched in that window got a second
  block (with XLA's default scheduler: peak RSS 17 GB instead of 9.4, and that step took
  17 s instead of 4.4). Steps are therefore run inline on the calling thread, which frees
  the scratch before it returns.

  Must run before JAX starts its thread pools: threads created earlier keep arenas of
  their own, and with mmap off those serve large blocks badly (an SMT-T training step ran
  at 3.9 instead of 6.8 images/s). Returns False where glibc is not the allocator.
  """
  if not sys.platform.startswith('linux'):
    return False
  try:
    libc = ctypes.CDLL('libc.so.6')
  except OSError:
    return False
  m_trim_threshold, m_mmap_max, m_arena_max = -1, -4, -8
  if not (libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, -1)
          and libc.mallopt(m_arena_max, 1)):
    return False
  jax.config.update('jax_cpu_enable_async_dispatch', False)
  return True


def _describe(device: jax.Device) -> str:
  return f'{device.platform}:{device.device_kind} x{jax.device_count()}'


def build_step(model, mode: str, images: jax.Array, labels: jax.Array,
               learning_rate: float = 1e-3) -> Tuple[Callable, Any]:
  """Returns (jitted step, initial state); `step(state, images, labels) -> state`.

  Inference state is the variables and the step returns them with the logits, so the
  timing loop has one shape for both modes.
  """
  # The model is size-agnostic: a small input and 'rbg' keys keep init's compilation short
  # (on XLA:CPU threefry's takes half as long again).
  variables = jax.jit(lambda x: model.init(jax.random.key(0, impl='rbg'), x))(
      jnp.zeros((1, 32, 32, 3), images.dtype))
  if mode == 'infer':
    def infer(state, x, y):
      del y
      return state, model.apply(state, x)
    return jax.jit(infer, compiler_options=xla_options.compiler_options()), variables

  tx = optax.adamw(learning_rate, weight_decay=0.05)
  params, batch_stats = variables['params'], variables.get('batch_stats', {})
  state = (params, batch_stats, tx.init(params), jax.random.key(1))

  def train(state, x, y):
    params, batch_stats, opt_state, rng = state
    rng, dropout_rng = jax.random.split(rng)

    def loss_fn(p):
      logits, updates = model.apply({'params': p, 'batch_stats': batch_stats}, x, train=True,
                                    rngs={'dropout': dropout_rng}, mutable=['batch_stats'])
      loss = optax.softmax_cross_entropy_with_integer_labels(
          logits.astype(jnp.float32), y).mean()
      return loss, updates['batch_stats']

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats, opt_state, rng), loss

  return jax.jit(train, donate_argnums=0,
                 compiler_options=xla_options.compiler_options()), state


def run(model_name: str = 'smt_t', batch: int = 32, mode: str = 'infer',
        image_size: int = 224, dtype: str = 'float32', steps: int = 10, warmup: int = 2,
        **model_overrides) -> Dict[str, Any]:
  """Benchmarks one configuration and returns the figures as a dict."""
  if mode not in ('infer', 'train'):
    raise ValueError(f'mode must be infer or train; got {mode!r}')
  device = jax.devices()[0]
  model = create_model(model_name, dtype=DTYPES[dtype], **model_overrides)
  key_x, key_y = jax.random.split(jax.random.key(42))
  images = jax.random.normal(key_x, (batch, image_size, image_size, 3), DTYPES[dtype])
  labels = jax.random.randint(key_y, (batch,), 0, model.num_classes)

  step, state = build_step(model, mode, images, labels)
  start = time.perf_counter()
  compiled = step.lower(state, images, labels).compile()
  compile_s = time.perf_counter() - start
  flops = _flops(compiled)

  # Every step is waited for before the next is dispatched: on XLA:CPU a queued step
  # allocates its scratch memory while the one before it still runs. Pages mapped fresh
  # are only touched once the step runs, but with the host memory retained the heap grows
  # by another scratch block (SMT-T training, batch 8, three steps queued: 8.5 instead of
  # 3.8 GB peak and half the speed).
  for _ in range(warmup):
    state, out = compiled(state, images, labels)
    jax.block_until_ready(out)
  start = time.perf_counter()
  for _ in range(steps):
    state, out = compiled(state, images, labels)
    jax.block_until_ready(out)
  step_s = (time.perf_counter() - start) / steps

  return {
      'model': model_name, 'mode': mode, 'batch': batch, 'image_size': image_size,
      'dtype': dtype, **{k: str(v) for k, v in model_overrides.items()},
      'images_per_sec': round(batch / step_s, 3),
      'step_ms': round(step_s * 1e3, 2),
      'tflops_per_sec': round(flops / step_s / 1e12, 4),
      'gflops_per_step': round(flops / 1e9, 2),
      'peak_memory_gb': round(peak_memory_gb(device), 3),
      'compile_s': round(compile_s, 1),
      'device': _describe(device),
  }


def main(argv):
  del argv
  from absl import flags   # pylint: disable=import-outside-toplevel
  f = flags.FLAGS
  retained = f.retain_host_memory and retain_host_memory()   # before the backend starts
  overrides = {'dw_impl': f.dw_impl, 'mhmc_impl': f.mhmc_impl, 'saa_impl': f.saa_impl,
               'remat': f.remat}
  result = run(f.model, f.batch, f.mode, f.image_size, f.dtype, f.steps, f.warmup,
               **overrides)
  print(json.dumps({**result, 'retain_host_memory': retained}), flush=True)


def _define_flags():
  """Flags live here so that importing this module defines none."""
  from absl import flags   # pylint: disable=import-outside-toplevel
  flags.DEFINE_string('model', 'smt_t', 'SMT variant: smt_t, smt_s, smt_b or smt_l.')
  flags.DEFINE_integer('batch', 32, 'Images per step.')
  flags.DEFINE_enum('mode', 'infer', ['infer', 'train'],
                    'infer: forward pass; train: forward, backward and AdamW update.')
  flags.DEFINE_integer('image_size', 224, 'Square input side in pixels.')
  flags.DEFINE_enum('dtype', 'float32', list(DTYPES), 'Compute dtype (parameters stay fp32).')
  flags.DEFINE_integer('steps', 10, 'Timed steps.')
  flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
  flags.DEFINE_string('dw_impl', 'auto', 'Depthwise-conv formulation (SMT.dw_impl).')
  flags.DEFINE_string('mhmc_impl', 'auto', 'MHMC formulation (SMT.mhmc_impl).')
  flags.DEFINE_string('saa_impl', 'auto', 'SAA head-mixing formulation (SMT.saa_impl).')
  flags.DEFINE_string('remat', 'none', 'Per-block rematerialization (SMT.remat).')
  flags.DEFINE_bool('retain_host_memory', True,
                    'Keep freed host memory mapped and run steps inline on the calling '
                    'thread (see retain_host_memory); matters on CPU.')


if __name__ == '__main__':
  from absl import app   # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)
