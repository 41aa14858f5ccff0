"""XLA compiler options for the project's jitted steps, per backend.

XLA:CPU's memory-optimized scheduler gives SMT's training and inference steps markedly
less scratch memory than the default scheduler at the same speed (see
docs/performance.md), so every CPU compilation uses it. Other backends keep their own
schedulers, which already weigh memory.
"""
from typing import Any, Dict, Optional

import jax

CPU_OPTIONS = {'xla_cpu_scheduler_type': 'CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED'}


def compiler_options(backend: Optional[str] = None) -> Optional[Dict[str, Any]]:
  """`compiler_options` for `jax.jit` on `backend` (default: JAX's default backend)."""
  if (backend or jax.default_backend()) == 'cpu':
    return dict(CPU_OPTIONS)
  return None
