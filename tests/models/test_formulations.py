"""Every op set and speed-motivated formulation computes the same function, forward and backward.

The CPU op set's matmuls and convolutions (shift depthwise conv with its hand-written
gradient, im2col and patchify convs, the block-diagonal grouped 1x1 conv, 2-D matmuls),
per-block rematerialization and chunked attention must change time and memory only, and
every op set must declare the same parameters.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smt_jax.models import abstract_variables, attention, cpu_ops, create_model, ops
from smt_jax.models.layers import conv_init, dense_init

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


@pytest.mark.parametrize('k', [3, 9])
@pytest.mark.parametrize('kernel_grad', ['conv', 'conv in groups', 'images',
                                         'images in groups', 'columns', 'columns in chunks'])
def test_depthwise_shift_equals_lax_forward_and_backward(k, kernel_grad, monkeypatch):
  x = jax.random.normal(jax.random.key(0), (4, 9, 13, 8))
  if kernel_grad == 'conv in groups':   # groups of 3, 3 and 2 channels
    monkeypatch.setattr(cpu_ops, 'KERNEL_GRAD_CONV_GROUP', 3)
  elif kernel_grad != 'conv':
    monkeypatch.setattr(cpu_ops, 'LAX_KERNEL_GRAD_MAX_CHANNELS', 4)
    # x is 13 wide: column sums from a minimum width of 13, image sums when it is 14.
    monkeypatch.setattr(cpu_ops, 'COLUMN_SUM_MIN_WIDTH', 13 if 'columns' in kernel_grad else 14)
  if kernel_grad == 'columns in chunks':   # two images per chunk, two chunks
    monkeypatch.setattr(cpu_ops, 'KERNEL_GRAD_CHUNK_BYTES', 2 * 4 * 9 * 13 * 8)
    assert cpu_ops._images_per_chunk(x) == 2
  if kernel_grad == 'images in groups':   # at most 3 per sum: two groups of two images
    monkeypatch.setattr(cpu_ops, 'IMAGES_PER_SUM', 3)
  formulation = {'conv': cpu_ops._kernel_grad_by_conv, 'images': cpu_ops._kernel_grad_by_images,
                 'columns': cpu_ops._kernel_grad_by_columns}[kernel_grad.split()[0]]
  assert cpu_ops._kernel_grad_formulation(x) is formulation
  kernel = jax.random.normal(jax.random.key(1), (k, k, 1, 8))
  reference = value_and_grads(cpu_ops.depthwise_conv_lax, x, kernel)
  assert_all_close(value_and_grads(cpu_ops.depthwise_conv_shift, x, kernel), reference)
  y = jax.jit(cpu_ops.depthwise_conv_shift)(x, kernel)
  assert_close(y, jax.jit(cpu_ops.depthwise_conv_lax)(x, kernel))


def test_depthwise_shift_keeps_bfloat16_and_its_gradients_dtypes():
  x = jnp.ones((1, 5, 5, 4), jnp.bfloat16)
  kernel = jnp.ones((3, 3, 1, 4), jnp.bfloat16)
  y, *grads = value_and_grads(cpu_ops.depthwise_conv_shift, x, kernel)
  assert cpu_ops.depthwise_conv_shift(x, kernel).dtype == jnp.bfloat16
  assert [g.dtype for g in grads] == [jnp.bfloat16, jnp.bfloat16]
  assert np.isfinite(float(y))


# (kernel size, stride, padding, groups, bias, input (H, W, C), features): every kind of
# convolution SMT has, and two that the CPU set passes on to XLA.
CONVS = {
    'depthwise 3x3': (3, 1, 1, 'all', True, (9, 13, 8), 8),
    'depthwise 9x9': (9, 1, 4, 'all', True, (9, 13, 8), 8),
    'stem 7x7/2': (7, 2, 3, 1, False, (9, 12, 3), 5),
    'patch embed 3x3/2': (3, 2, 1, 1, True, (9, 12, 6), 5),
    'patchify 2x2/2': (2, 2, 'VALID', 1, True, (9, 12, 6), 5),   # odd side: last row dropped
    'pointwise': (1, 1, 'VALID', 1, True, (5, 6, 12), 7),
    'grouped pointwise': (1, 1, 'VALID', 4, True, (5, 6, 12), 8),   # SAA's proj0
    'grouped 3x3 (XLA)': (3, 1, 1, 2, True, (5, 6, 8), 4),
    'asymmetric padding (XLA)': (3, 1, ((0, 2), (1, 1)), 1, True, (5, 6, 4), 4),
}


@pytest.mark.parametrize('name', sorted(CONVS))
def test_cpu_conv_equals_flax_conv(name):
  k, stride, padding, groups, use_bias, shape, features = CONVS[name]
  x = jax.random.normal(jax.random.key(0), (2, *shape))
  groups = shape[-1] if groups == 'all' else groups
  layer = lambda op_set: op_set.conv(features, (k, k), strides=stride, padding=padding,
                                     feature_group_count=groups, use_bias=use_bias,
                                     kernel_init=conv_init(groups))
  variables = layer(ops.XLA).init(jax.random.key(1), x)   # weights at the init's scale
  if use_bias:
    variables = jax.tree.map(lambda v: v + 0.1, variables)
  # The CPU set computes every kind of convolution SMT has without XLA's convolution.
  jaxpr = str(jax.make_jaxpr(layer(ops.CPU).apply)(variables, x))
  assert ('conv_general_dilated' in jaxpr) == name.endswith('(XLA)')
  assert_all_close(value_and_grads(lambda x, v: layer(ops.CPU).apply(v, x), x, variables),
                   value_and_grads(lambda x, v: layer(ops.XLA).apply(v, x), x, variables))


@pytest.mark.parametrize('use_bias', [True, False])
@pytest.mark.parametrize('shape', [(2, 5, 7, 6), (3, 6)])
def test_cpu_dense_equals_flax_dense(use_bias, shape):
  x = jax.random.normal(jax.random.key(0), shape)
  layer = lambda op_set: op_set.dense(4, use_bias=use_bias, kernel_init=dense_init)
  variables = layer(ops.XLA).init(jax.random.key(1), x)
  variables = jax.tree.map(lambda v: jax.random.normal(jax.random.key(2), v.shape), variables)
  assert_all_close(value_and_grads(lambda x, v: layer(ops.CPU).apply(v, x), x, variables),
                   value_and_grads(lambda x, v: layer(ops.XLA).apply(v, x), x, variables))


def _has_transposed_output_gradient(matmul) -> bool:
  """Whether the compiled kernel gradient of `matmul` on (4, 8, 8, 16) @ (16, 64) makes a
  (64, 256) array: the output gradient, transposed."""
  x, kernel = jnp.ones((4, 8, 8, 16)), jnp.ones((16, 64))
  grad = jax.jit(jax.grad(lambda k: jnp.sum(jnp.sin(matmul(x, k)))))
  return 'f32[64,256]' in grad.lower(kernel).compile().as_text()


@pytest.mark.cpu_only
def test_linear_kernel_gradient_reads_the_output_gradient_as_it_lies_on_cpu():
  assert _has_transposed_output_gradient(lambda x, k: x @ k)   # what `linear` avoids
  assert not _has_transposed_output_gradient(cpu_ops.linear)


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
  model = create_model('smt_t', **TINY, ops='xla')
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
  reference = _model_outputs_and_grads(model, variables, images, labels)
  return model, variables, images, labels, reference


@pytest.mark.parametrize('fields', [
    dict(ops='cpu'),
    dict(remat='full'),
    dict(remat='dots'),
])
def test_op_sets_and_remat_give_identical_training_step(tiny, fields):
  model, variables, images, labels, reference = tiny
  assert_all_close(
      _model_outputs_and_grads(model.clone(**fields), variables, images, labels), reference)


def test_op_sets_and_remat_declare_the_same_parameters(tiny):
  """Same tree, shapes, dtypes, and initial values from the same key."""
  model, variables, images, _, _ = tiny
  shapes = lambda v: jax.tree.map(lambda a: (a.shape, a.dtype), v)
  for fields in (dict(ops='cpu'), dict(ops=ops.CPU), dict(remat='full'), dict(remat='dots')):
    assert shapes(abstract_variables(model.clone(**fields))) == shapes(variables)
  init = lambda m: jax.jit(m.init)(jax.random.key(1, impl='rbg'), images)
  jax.tree.map(np.testing.assert_array_equal, init(model.clone(ops='cpu')), init(model))
  assert 'block3_1' in variables['params'] and 'local_conv_4' in (
      variables['params']['block1_0']['attn'])


def test_auto_picks_the_set_for_the_default_backend():
  expected = ops.CPU if jax.default_backend() == 'cpu' else ops.XLA
  assert ops.resolve('auto') is expected
  assert ops.resolve(ops.CPU) is ops.CPU and ops.resolve('xla') is ops.XLA


def test_unknown_names_are_rejected():
  x = jnp.ones((1, 32, 32, 3))
  for fields in (dict(remat='sometimes'), dict(ops='fast')):
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
  def unavailable(*args, **kwargs):
    raise RuntimeError('cuDNN is not available')   # what an old or missing cuDNN raises
  monkeypatch.setattr(attention, '_use_cudnn', lambda q: True)
  monkeypatch.setattr(jax.nn, 'dot_product_attention', unavailable)
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
