"""Global softmax attention whose memory grows linearly with the number of tokens.

Stage 3 of SMT attends over every token of the image: a 2048x2048 input gives 16,384
tokens and a 16,384^2 score matrix per head, which is what runs the official code out of
memory. Queries are processed in chunks (each chunk still sees every key, so the softmax
is exact) and each chunk is rematerialized in the backward pass, so neither pass holds
more than `query_chunk_size x tokens` scores per head.
"""
from typing import Optional

import jax
import jax.numpy as jnp

QUERY_CHUNK_SIZE = 1024


def _attend(q, k, v, dropout_rate: float = 0.0, dropout_rng: Optional[jax.Array] = None):
  """Plain attention on (B, N, heads, head_dim) tensors; softmax in float32."""
  scale = q.shape[-1] ** -0.5
  logits = jnp.einsum('bqhd,bkhd->bhqk', q, k) * jnp.asarray(scale, q.dtype)
  weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(q.dtype)
  if dropout_rng is not None and dropout_rate > 0:
    keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, weights.shape)
    weights = jnp.where(keep, weights / (1.0 - dropout_rate), 0).astype(q.dtype)
  return jnp.einsum('bhqk,bkhd->bqhd', weights, v)


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, *,
                          dropout_rate: float = 0.0, dropout_rng: Optional[jax.Array] = None,
                          query_chunk_size: int = QUERY_CHUNK_SIZE) -> jax.Array:
  """softmax(q k^T / sqrt(d)) v over (B, N, heads, head_dim) inputs.

  Attention dropout (`dropout_rng` given) uses the direct formulation: it is off in
  every official recipe, so it need not be memory-lean.
  """
  n = q.shape[1]
  if n <= query_chunk_size or dropout_rng is not None:
    return _attend(q, k, v, dropout_rate, dropout_rng)
  num_chunks = -(-n // query_chunk_size)
  pad = num_chunks * query_chunk_size - n
  qc = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))
  qc = qc.reshape(q.shape[0], num_chunks, query_chunk_size, *q.shape[2:]).swapaxes(0, 1)
  out = jax.lax.map(jax.checkpoint(lambda chunk: _attend(chunk, k, v)), qc)
  out = out.swapaxes(0, 1).reshape(q.shape[0], num_chunks * query_chunk_size, *q.shape[2:])
  return out[:, :n]
