"""Global softmax attention whose memory grows linearly with the number of tokens.

Stage 3 of SMT attends over every token of the image: a 2048x2048 input gives 16,384
tokens and a 16,384^2 score matrix per head, which is what runs the official code out of
memory. When the scores would pass `SCORE_BUDGET_BYTES`, queries are processed in chunks
(each chunk still sees every key, so the softmax is exact) and each chunk is
rematerialized in the backward pass, so neither pass holds more than about one chunk of
scores. On NVIDIA GPUs in half precision, cuDNN's fused attention does the same job in
one kernel and is used instead.
"""
from typing import Optional

from absl import logging
import jax
import jax.numpy as jnp

# fp32 scores of one image held at once before queries are chunked: training at 224 or
# 384 stays on the single-einsum path, a 2048x2048 image takes 256-query chunks in stage 3.
# Per image, not per batch, so the choice never depends on a (possibly symbolic) batch size.
SCORE_BUDGET_BYTES = 128 * 2**20
MIN_QUERY_CHUNK = 128


def _heads_major(t: jax.Array) -> jax.Array:
  """(B, N, heads, head_dim) -> (B, heads, N, head_dim).

  Batched matmuls with the batch dimensions leading: from token-major einsums XLA:CPU ran
  the query gradient as a generic dot, and attention forward plus backward was slower.
  """
  return t.swapaxes(1, 2)


def _weights(q: jax.Array, k: jax.Array) -> jax.Array:
  """softmax(q k^T / sqrt(d)) in float32, from heads-major inputs."""
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum('bhqd,bhkd->bhqk', q, k) * jnp.asarray(scale, q.dtype)
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(q.dtype)


def attention_weights(q: jax.Array, k: jax.Array) -> jax.Array:
  """softmax(q k^T / sqrt(d)) as (B, heads, N_q, N_k), from (B, N, heads, head_dim) inputs."""
  return _weights(_heads_major(q), _heads_major(k))


def _attend(q, k, v, dropout_rate: float = 0.0, dropout_rng: Optional[jax.Array] = None):
  """Plain attention on heads-major (B, heads, N, head_dim) tensors; softmax in float32."""
  weights = _weights(q, k)
  if dropout_rng is not None and dropout_rate > 0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0).astype(q.dtype)
  return jnp.einsum('bhqk,bhkd->bhqd', weights, v)


def query_chunk_size(heads: int, tokens: int) -> Optional[int]:
  """Queries per chunk that keep one image's scores within the budget; None: no chunking."""
  row_bytes = heads * tokens * 4
  if row_bytes * tokens <= SCORE_BUDGET_BYTES:
    return None
  chunk = MIN_QUERY_CHUNK
  while chunk * 2 * row_bytes <= SCORE_BUDGET_BYTES and chunk * 2 < tokens:
    chunk *= 2
  return chunk


def _chunked(q, k, v, chunk: int):
  """_attend over chunks of `chunk` queries, each rematerialized in the backward pass."""
  n = q.shape[2]
  num_chunks = -(-n // chunk)
  pad = num_chunks * chunk - n
  qc = jnp.pad(q, ((0, 0), (0, 0), (0, pad), (0, 0)))
  qc = qc.reshape(*q.shape[:2], num_chunks, chunk, q.shape[3]).transpose(2, 0, 1, 3, 4)
  out = jax.lax.map(jax.checkpoint(lambda c: _attend(c, k, v)), qc)
  out = out.transpose(1, 2, 0, 3, 4).reshape(*q.shape[:2], num_chunks * chunk, q.shape[3])
  return out[:, :, :n]


def _use_cudnn(q: jax.Array) -> bool:
  """cuDNN flash attention: NVIDIA GPUs, fp16/bf16, head_dim a multiple of 8 up to 128."""
  head_dim = q.shape[-1]
  return (jax.default_backend() == 'gpu' and q.dtype in (jnp.bfloat16, jnp.float16)
          and head_dim % 8 == 0 and head_dim <= 128)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                          dropout_rate: float = 0.0, dropout_rng: Optional[jax.Array] = None,
                          query_chunk: Optional[int] = None) -> jax.Array:
  """softmax(q k^T / sqrt(d)) v over (B, N, heads, head_dim) inputs.

  `query_chunk` forces a chunk size; by default `query_chunk_size` picks one, or none.
  Attention dropout (`dropout_rng` given) uses the direct formulation: it is off in
  every official recipe, so it need not be memory-lean.
  """
  dropout = dropout_rng is not None and dropout_rate > 0
  if _use_cudnn(q) and not dropout:
    try:
      return jax.nn.dot_product_attention(q, k, v, implementation='cudnn')
    except (NotImplementedError, ValueError, RuntimeError) as e:   # e.g. cuDNN too old
      logging.warning('cuDNN attention is unavailable (%s); using XLA attention instead.', e)
  tokens, heads = q.shape[1], q.shape[2]
  q, k, v = (_heads_major(t) for t in (q, k, v))
  chunk = None if dropout else query_chunk or query_chunk_size(heads, tokens)
  if chunk is None or chunk >= tokens:
    out = _attend(q, k, v, dropout_rate, dropout_rng)
  else:
    out = _chunked(q, k, v, chunk)
  return _heads_major(out)
