"""Throughput benchmark of an SMT variant, or of UPerNet on one, on the default JAX device.

    python -m smt_jax.tools.bench --model=smt_t|upernet_smt_s|... --batch=32 --mode=infer|train \
        [--image_size=224] [--dtype=float32|bfloat16] [--ops=auto|xla|cpu] \
        [--remat=none|full|dots] [--noretain_host_memory]

Compiles one step, runs `--warmup` untimed steps, then times `--steps` steps (each waited
for before the next starts) and prints one JSON line: images/s, ms per step, achieved
TFLOP/s (FLOPs from XLA's cost analysis of the compiled step), peak memory (host RSS on
CPU, device memory on accelerators) and the device. `mode=train` times the training
loop's own step (`smt_jax.train.train_step.make_train_step`: forward, backward, AdamW
update) jitted with donated state, as the loop runs it. `upernet_<variant>` is the
segmenter of the ADE20K recipe (150 classes; training: both heads and the per-pixel loss,
`smt_jax.train.segmentation`). Random inputs: speed does not depend on the pixel values.
"""
import ctypes
import json
import resource
import sys
import time
from typing import Any, Callable, Dict, Tuple

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import optax

from smt_jax.tools import summary
from smt_jax.train import xla_options
from smt_jax.models import UPerNet, create_model, init_input
from smt_jax.models import ops as ops_lib
from smt_jax.models.smt import REMAT_POLICIES
from smt_jax.train import segmentation
from smt_jax.train import train_step

FLAGS = flags.FLAGS
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
UPERNET = 'upernet_'
ADE20K_CLASSES = 150


def create_bench_model(name: str, **overrides):
  """An SMT variant by name, or `upernet_<variant>`: UPerNet on that SMT, 150 classes."""
  if name.startswith(UPERNET):
    return UPerNet(create_model(name[len(UPERNET):], **overrides, num_classes=0),
                   ADE20K_CLASSES)
  return create_model(name, **overrides)


def peak_memory_gb(device: jax.Device) -> float:
  """Peak device memory on accelerators; peak resident host memory on CPU."""
  if device.platform != 'cpu':
    stats = device.memory_stats() or {}
    if 'peak_bytes_in_use' in stats:
      return stats['peak_bytes_in_use'] / 2**30
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # KiB on Linux


def retain_host_memory() -> bool:
  """Makes glibc keep freed memory instead of returning it to the OS (CPU backend).

  XLA:CPU allocates each step's scratch memory anew as one block of gigabytes; glibc serves
  it with a fresh mmap and unmaps it on free, so every step page-faults and zeroes all of
  it again (a large share of a step's time goes to the kernel). With mmap off, no
  trimming and a single arena, the block stays mapped and the next step reuses it.

  The heap then keeps its high-water mark, so two scratch blocks must never be live at
  once. With asynchronous dispatch XLA:CPU frees a step's scratch on a worker thread just
  after the step's outputs are ready, and a next step dispatched in that window gets a
  second block (about twice the peak memory, and a much slower step). Steps are therefore
  run inline on the calling thread, which frees the scratch before it returns.

  Must run before JAX starts its thread pools: threads created earlier keep arenas of
  their own, and with mmap off those serve large blocks badly. Returns False where glibc
  is not the allocator.
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


def build_step(model, mode: str, learning_rate: float = 1e-3) -> Tuple[Callable, Any]:
  """Returns (jitted step, initial state); `step(state, batch) -> (state, output)`.

  `batch` holds 'image' and 'label'. Inference state is the variables, returned unchanged
  with the logits, so the timing loop has one shape for both modes.
  """
  variables = jax.jit(lambda: model.init(jax.random.key(0, impl='rbg'), init_input(model)))()
  segmenter = isinstance(model, UPerNet)
  if mode == 'infer':
    def infer(state, batch):
      outputs = model.apply(state, batch['image'])
      return state, outputs[0] if segmenter else outputs
    return jax.jit(infer, compiler_options=xla_options.compiler_options()), variables

  def prepare(rng, batch):
    del rng
    if segmenter:
      return batch['image'], batch['label']
    return batch['image'], jax.nn.one_hot(batch['label'], model.num_classes)

  tx = optax.adamw(learning_rate, weight_decay=0.05)
  criterion = train_step.classification_loss
  if segmenter:
    criterion = segmentation.make_criterion(
        ml_collections.ConfigDict({'decode_weight': 1.0, 'aux_weight': 0.4}))
  step = train_step.make_train_step(model, tx, prepare, seed=0, criterion=criterion)
  return (jax.jit(step, donate_argnums=0, compiler_options=xla_options.compiler_options()),
          train_step.create_state(variables, tx, use_ema=False))


def run(model_name: str = 'smt_t', batch: int = 32, mode: str = 'infer',
        image_size: int = 224, dtype: str = 'float32', steps: int = 10, warmup: int = 2,
        **model_overrides) -> Dict[str, Any]:
  """Benchmarks one configuration and returns the figures as a dict."""
  if mode not in ('infer', 'train'):
    raise ValueError(f'mode must be infer or train; got {mode!r}')
  device = jax.devices()[0]
  model = create_bench_model(model_name, dtype=DTYPES[dtype], **model_overrides)
  key_x, key_y = jax.random.split(jax.random.key(42))
  images = jax.random.normal(key_x, (batch, image_size, image_size, 3), DTYPES[dtype])
  label_shape = (batch, image_size, image_size) if isinstance(model, UPerNet) else (batch,)
  batch_data = {'image': images,
                'label': jax.random.randint(key_y, label_shape, 0, model.num_classes)}

  step, state = build_step(model, mode)
  start = time.perf_counter()
  compiled = step.lower(state, batch_data).compile()
  compile_s = time.perf_counter() - start
  flops = summary.compiled_flops(compiled)

  # Every step is waited for before the next is dispatched: on XLA:CPU a queued step
  # allocates its scratch memory while the one before it still runs. Pages mapped fresh
  # are only touched once the step runs, but with the host memory retained the heap grows
  # by another scratch block for each step queued.
  for _ in range(warmup):
    state, out = compiled(state, batch_data)
    jax.block_until_ready(out)
  start = time.perf_counter()
  for _ in range(steps):
    state, out = compiled(state, batch_data)
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
  retained = FLAGS.retain_host_memory and retain_host_memory()   # before the backend starts
  result = run(FLAGS.model, FLAGS.batch, FLAGS.mode, FLAGS.image_size, FLAGS.dtype,
               FLAGS.steps, FLAGS.warmup, ops=FLAGS.ops, remat=FLAGS.remat)
  print(json.dumps({**result, 'retain_host_memory': retained}), flush=True)


def _define_flags():
  """Flags live here, not at import, so importing this module defines no flags."""
  flags.DEFINE_string('model', 'smt_t', 'SMT variant: smt_t, smt_s, smt_b or smt_l; '
                      'upernet_<variant> for the segmenter.')
  flags.DEFINE_integer('batch', 32, 'Images per step.')
  flags.DEFINE_enum('mode', 'infer', ['infer', 'train'],
                    'infer: forward pass; train: the training step (forward, backward, AdamW).')
  flags.DEFINE_integer('image_size', 224, 'Square input side in pixels.')
  flags.DEFINE_enum('dtype', 'float32', list(DTYPES), 'Compute dtype (parameters stay fp32).')
  flags.DEFINE_integer('steps', 10, 'Timed steps.')
  flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
  flags.DEFINE_enum('ops', 'auto', ['auto', *ops_lib.SETS],
                    'How the layers are computed (SMT.ops; auto: the set for the backend).')
  flags.DEFINE_enum('remat', 'none', ['none', *REMAT_POLICIES],
                    'Per-block rematerialization (SMT.remat).')
  flags.DEFINE_bool('retain_host_memory', True,
                    'Keep freed host memory mapped and run steps inline on the calling '
                    'thread (see retain_host_memory); matters on CPU.')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
