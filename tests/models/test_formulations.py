"""Every speed-motivated formulation computes the same function, forward and backward.

The depthwise-conv formulations, MHMC's split and fused kernels, SAA's folded interleave,
the 2-D matmuls, per-block rematerialization and chunked attention must change time and
memory only.
"""
import itertools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smt_jax.models import attention, create_model, layers
from smt_jax.models.smt import HeadMixer

TINY = dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 2, 1), num_classes=10)


def assert_close(actual, expected, rtol=1e-5):
  """Equal to float32 rounding, relative to the largest magnitude in `expected`.

  One scale for the whole tree: gradients that are zero in exact arithmetic (a bias
  followed by BatchNorm) come out as rounding noise of the gradients around them.
  """
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  scale = max(float(np.abs(np.asarray(e, np.float64)).max()) for e in jax.tree.leaves(expected))
  for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
    assert a.shape == e.shape
    np.testing.assert_allclose(a, e, rtol=0, atol=rtol * scale)


def assert_all_close(actual, expected):
  """assert_close on each pair of a sequence of trees, each with its own scale."""
  assert len(actual) == len(expected)
  for a, e in zip(actual, expected):
    assert_close(a, e)


def value_and_grads(fn, *args):
  """[fn's output summary, then its gradient w.r.t. each argument], as separate trees."""
  value, grads = jax.jit(jax.value_and_grad(lambda *a: jnp.sum(jnp.sin(fn(*a))),
                                            argnums=tuple(range(len(args)))))(*args)
  return [value, *grads]


@pytest.mark.parametrize('k', [3, 9])   # MHMC's 5 and 7: test_multi_kernel_depthwise_...
@pytest.mark.parametrize('kernel_grad', ['conv', 'conv in groups', 'images',
                                         'images in groups', 'columns', 'columns in chunks'])
def test_depthwise_shift_equals_lax_forward_and_backward(k, kernel_grad, monkeypatch):
  x = jax.random.normal(jax.random.key(0), (4, 9, 13, 8))
  if kernel_grad == 'conv in groups':   # groups of 3, 3 and 2 channels
    monkeypatch.setattr(layers, 'KERNEL_GRAD_CONV_GROUP', 3)
  elif kernel_grad != 'conv':
    monkeypatch.setattr(layers, 'LAX_KERNEL_GRAD_MAX_CHANNELS', 4)
    # x is 13 wide: column sums from a minimum width of 13, image sums when it is 14.
    monkeypatch.setattr(layers, 'COLUMN_SUM_MIN_WIDTH', 13 if 'columns' in kernel_grad else 14)
  if kernel_grad == 'columns in chunks':   # two images per chunk, two chunks
    monkeypatch.setattr(layers, 'KERNEL_GRAD_CHUNK_BYTES', 2 * 4 * 9 * 13 * 8)
    assert layers._images_per_chunk(x) == 2
  if kernel_grad == 'images in groups':   # at most 3 per sum: two groups of two images
    monkeypatch.setattr(layers, 'IMAGES_PER_SUM', 3)
  formulation = {'conv': layers._kernel_grad_by_conv, 'images': layers._kernel_grad_by_images,
                 'columns': layers._kernel_grad_by_columns}[kernel_grad.split()[0]]
  assert layers._kernel_grad_formulation(x) is formulation
  kernel = jax.random.normal(jax.random.key(1), (k, k, 1, 8))
  reference = value_and_grads(layers.depthwise_conv_lax, x, kernel)
  assert_all_close(value_and_grads(layers.depthwise_conv_shift, x, kernel), reference)
  y = jax.jit(layers.depthwise_conv_shift)(x, kernel)
  assert_close(y, jax.jit(layers.depthwise_conv_lax)(x, kernel))


def test_depthwise_shift_keeps_bfloat16_and_its_gradients_dtypes():
  x = jnp.ones((1, 5, 5, 4), jnp.bfloat16)
  kernel = jnp.ones((3, 3, 1, 4), jnp.bfloat16)
  y, *grads = value_and_grads(layers.depthwise_conv_shift, x, kernel)
  assert layers.depthwise_conv_shift(x, kernel).dtype == jnp.bfloat16
  assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]
  assert np.isfinite(float(y))


@pytest.mark.parametrize('dw_impl,mhmc_impl',
                         list(itertools.product(['shift', 'lax'], ['split', 'fused'])))
def test_multi_kernel_depthwise_formulations_agree(dw_impl, mhmc_impl):
  """MHMC: four heads of 4 channels with kernels 3/5/7/9, against per-head lax convs."""
  x = jax.random.normal(jax.random.key(0), (2, 11, 7, 16))
  kernels = [jax.random.normal(jax.random.key(k), (k, k, 1, 4)) for k in (3, 5, 7, 9)]
  biases = [jax.random.normal(jax.random.key(10 + i), (4,)) for i in range(4)]

  def reference(x, *kernels):
    xs = jnp.split(x, 4, axis=-1)
    return jnp.concatenate([layers.depthwise_conv_lax(x_i, k_i) + b_i
                            for x_i, k_i, b_i in zip(xs, kernels, biases)], axis=-1)

  def formulation(x, *kernels):
    return layers.multi_kernel_depthwise(x, kernels, biases, dw_impl, mhmc_impl)

  assert_all_close(value_and_grads(formulation, x, *kernels),
                   value_and_grads(reference, x, *kernels))


@pytest.mark.parametrize('impl', ['dense', 'grouped'])
def test_head_mixer_equals_official_interleave_and_grouped_conv(impl):
  """proj0 on head-major channels == interleave heads, then a grouped 1x1 conv."""
  heads, groups, features = 4, 8, 64
  s = jax.random.normal(jax.random.key(0), (2, 5, 6, heads * groups))
  mixer = HeadMixer(features, heads, impl)
  variables = mixer.init(jax.random.key(1), s)
  variables = jax.tree.map(lambda v: jax.random.normal(jax.random.key(2), v.shape), variables)

  def official(s, kernel, bias):
    # torch: s_out[:, j*heads + i] = head i, channel j; Conv2d(groups=C/heads).
    interleaved = s.reshape(*s.shape[:-1], heads, groups).swapaxes(-1, -2)
    interleaved = interleaved.reshape(s.shape)
    return jax.lax.conv_general_dilated(
        interleaved, kernel, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        feature_group_count=groups) + bias

  def folded(s, kernel, bias):
    return mixer.apply({'params': {'kernel': kernel, 'bias': bias}}, s)

  params = variables['params']
  assert_all_close(value_and_grads(folded, s, params['kernel'], params['bias']),
                   value_and_grads(official, s, params['kernel'], params['bias']))


def test_patchify_conv_equals_strided_conv():
  x = jax.random.normal(jax.random.key(0), (2, 9, 12, 6))   # odd side: last row dropped
  patchify = layers.PatchifyConv(5, 2)
  conv = nn.Conv(5, (2, 2), strides=2, padding='VALID')
  variables = patchify.init(jax.random.key(1), x)
  variables = jax.tree.map(lambda v: jax.random.normal(jax.random.key(2), v.shape), variables)
  assert_all_close(value_and_grads(lambda x, v: patchify.apply(v, x), x, variables),
                   value_and_grads(lambda x, v: conv.apply(v, x), x, variables))


@pytest.mark.parametrize('k,use_bias', [(3, True), (7, False)])
def test_strided_conv_equals_flax_conv(k, use_bias):
  x = jax.random.normal(jax.random.key(0), (2, 9, 12, 6))   # odd and even sides
  strided = layers.StridedConv(5, k, 2, use_bias=use_bias)
  conv = nn.Conv(5, (k, k), strides=2, padding=[(k // 2, k // 2)] * 2, use_bias=use_bias)
  variables = strided.init(jax.random.key(1), x)   # weights at the init's scale
  assert_all_close(value_and_grads(lambda x, v: strided.apply(v, x), x, variables),
                   value_and_grads(lambda x, v: conv.apply(v, x), x, variables))


@pytest.mark.parametrize('use_bias', [True, False])
def test_dense_equals_flax_dense(use_bias):
  x = jax.random.normal(jax.random.key(0), (2, 5, 7, 6))
  ours = layers.Dense(4, use_bias=use_bias)
  flax_dense = nn.Dense(4, use_bias=use_bias, kernel_init=layers.dense_init)
  variables = ours.init(jax.random.key(1), x)
  assert_close(variables, flax_dense.init(jax.random.key(1), x))   # same init, same tree
  variables = jax.tree.map(lambda v: jax.random.normal(jax.random.key(2), v.shape), variables)
  assert_all_close(value_and_grads(lambda x, v: ours.apply(v, x), x, variables),
                   value_and_grads(lambda x, v: flax_dense.apply(v, x), x, variables))


def _has_transposed_output_gradient(matmul) -> bool:
  """Whether the compiled kernel gradient of `matmul` on (4, 8, 8, 16) @ (16, 64) makes a
  (64, 256) array: the output gradient, transposed."""
  x, kernel = jnp.ones((4, 8, 8, 16)), jnp.ones((16, 64))
  grad = jax.jit(jax.grad(lambda k: jnp.sum(jnp.sin(matmul(x, k)))))
  return 'f32[64,256]' in grad.lower(kernel).compile().as_text()


def test_linear_kernel_gradient_reads_the_output_gradient_as_it_lies_on_cpu():
  assert _has_transposed_output_gradient(lambda x, k: x @ k)   # what `linear` avoids
  assert not _has_transposed_output_gradient(layers.linear)


def _model_outputs_and_grads(model, variables, images, labels):
  """[loss, logits, updated BatchNorm statistics, parameter gradients] of a train step."""
  def loss(params):
    logits, state = model.apply({**variables, 'params': params}, images, train=True,
                                mutable=['batch_stats'])
    xent = -jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1)
    return xent.mean(), (logits, state['batch_stats'])
  (value, (logits, stats)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
      variables['params'])
  return [value, logits, stats, grads]


@pytest.fixture(name='tiny', scope='module')
def tiny_fixture():
  model = create_model('smt_t', **TINY)
  images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
  labels = jnp.array([3, 7])
  # 'rbg' keys: XLA:CPU compiles this init in half the time it takes with threefry.
  variables = jax.jit(model.init)(jax.random.key(1, impl='rbg'), images)
  # Random BatchNorm statistics and affine terms, so that nothing is an identity. (In
  # NumPy: eager JAX would compile one program per leaf shape.)
  rng = np.random.default_rng(0)
  variables = jax.tree.map(
      lambda v: v if v.dtype != jnp.float32 else np.asarray(v) + 0.1 * rng.normal(
          size=v.shape).astype(np.float32), jax.device_get(variables))
  reference = _model_outputs_and_grads(
      model.clone(dw_impl='lax', mhmc_impl='split', saa_impl='grouped'), variables, images,
      labels)
  return model, variables, images, labels, reference


@pytest.mark.parametrize('fields', [   # shift/fused is covered op-level (and compiles slowly)
    dict(dw_impl='shift', mhmc_impl='split', saa_impl='dense'),
    dict(dw_impl='lax', mhmc_impl='fused', saa_impl='grouped'),
    dict(dw_impl='lax', remat='full'),
    dict(dw_impl='lax', remat='dots'),
])
def test_model_formulations_and_remat_give_identical_training_step(tiny, fields):
  model, variables, images, labels, reference = tiny
  assert_all_close(
      _model_outputs_and_grads(model.clone(**fields), variables, images, labels), reference)


def test_remat_and_formulations_keep_the_parameter_tree(tiny):
  model, variables, images, _, _ = tiny
  shapes = lambda v: jax.tree.map(lambda a: (a.shape, a.dtype), v)
  for fields in (dict(remat='full'), dict(remat='dots'), dict(mhmc_impl='fused'),
                 dict(saa_impl='grouped'), dict(saa_impl='dense')):
    other = jax.eval_shape(model.clone(**fields).init, jax.random.key(1), images)
    assert shapes(other) == shapes(variables)
  assert 'block3_1' in variables['params'] and 'local_conv_4' in (
      variables['params']['block1_0']['attn'])


def test_unknown_formulation_names_are_rejected():
  x = jnp.ones((1, 32, 32, 3))
  for fields in (dict(remat='sometimes'), dict(dw_impl='fft'), dict(mhmc_impl='one'),
                 dict(saa_impl='sparse')):
    with pytest.raises(ValueError, match=next(iter(fields))):
      jax.eval_shape(create_model('smt_t', **TINY, **fields).init, jax.random.key(0), x)


def _reference_attention(q, k, v):
  """softmax(q k^T / sqrt(d)) v written out in NumPy, token-major as the model passes it."""
  q, k, v = (np.asarray(t, np.float64) for t in (q, k, v))
  logits = np.einsum('bqhd,bkhd->bhqk', q, k) / np.sqrt(q.shape[-1])
  weights = np.exp(logits - logits.max(-1, keepdims=True))
  weights /= weights.sum(-1, keepdims=True)
  return np.einsum('bhqk,bkhd->bqhd', weights, v), weights


def test_attention_equals_softmax_of_scaled_scores():
  q, k, v = (jax.random.normal(jax.random.key(i), (2, 10, 3, 8)) for i in range(3))
  out, weights = _reference_attention(q, k, v)
  assert_close(jax.jit(attention.dot_product_attention)(q, k, v), out)
  assert_close(jax.jit(attention.attention_weights)(q, k), weights)


def test_unusable_cudnn_attention_warns_and_falls_back(monkeypatch, caplog):
  # On CPU jax's cuDNN attention raises RuntimeError: the failure the fallback is for.
  monkeypatch.setattr(attention, '_use_cudnn', lambda q: True)
  q, k, v = (jax.random.normal(jax.random.key(i), (2, 10, 3, 8)) for i in range(3))
  with caplog.at_level('WARNING'):
    out = attention.dot_product_attention(q, k, v)
  assert 'cuDNN attention is unavailable' in caplog.text
  assert_close(out, _reference_attention(q, k, v)[0])


@pytest.mark.parametrize('tokens,chunk', [(64, 16), (70, 16), (70, 128), (37, 5)])
def test_chunked_attention_equals_plain_attention(tokens, chunk):
  q, k, v = (jax.random.normal(jax.random.key(i), (2, tokens, 3, 8)) for i in range(3))
  plain = value_and_grads(attention.dot_product_attention, q, k, v)
  chunked = value_and_grads(
      lambda q, k, v: attention.dot_product_attention(q, k, v, query_chunk=chunk), q, k, v)
  assert_all_close(chunked, plain)


def test_query_chunks_follow_the_score_budget():
  budget = attention.SCORE_BUDGET_BYTES
  assert attention.query_chunk_size(8, 196) is None               # SMT-T stage 3 at 224
  assert attention.query_chunk_size(8, 576) is None               # stage 3 at 384
  chunk = attention.query_chunk_size(8, 128 * 128)                # stage 3 at 2048
  assert chunk is not None and chunk * 8 * 128 * 128 * 4 <= budget
  assert attention.query_chunk_size(16, 16384) == attention.MIN_QUERY_CHUNK
