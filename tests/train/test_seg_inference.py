"""seg_inference: mmseg's window arithmetic by hand, and sliding-window against whole-image
inference on per-pixel networks, for which the two must agree."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from smt_jax.models.upernet import resize
from smt_jax.train import seg_inference as si


def test_window_boxes_by_hand():
  # 683 wide: ceil((683 - 512) / 341) + 1 = 2 columns, the second moved back to end at 683
  assert si.window_boxes(512, 683) == [(0, 512, 0, 512), (0, 512, 171, 683)]
  rows = [(0, 512), (88, 600)]
  cols = [(0, 512), (341, 853), (588, 1100)]
  assert si.window_boxes(600, 1100) == [r + c for r in rows for c in cols]
  assert si.window_boxes(300, 400) == [(0, 300, 0, 400)]  # smaller than the crop: one window
  assert si.window_boxes(512, 512) == [(0, 512, 0, 512)]
  assert si.window_boxes(512, 853) == [(0, 512, 0, 512), (0, 512, 341, 853)]


def test_count_map_by_hand():
  counts = si.count_map(600, 1100)
  assert counts[0, 0] == 1 and counts[599, 1099] == 1
  assert counts[100, 400] == 4  # rows 0-512 and 88-600, columns 0-512 and 341-853
  assert counts[100, 600] == 4  # columns 341-853 and 588-1100
  assert counts[50, 600] == 2  # row 0-512 only; columns 341-853 and 588-1100
  assert counts[50, 550] == 1  # row 0-512, column 341-853
  assert counts.min() >= 1 and counts.sum() == 6 * 512 * 512


def per_pixel_net(stride):
  """A 1x1 linear map on pixels, its output subsampled by `stride` (1: none)."""
  weights = jnp.asarray(np.random.default_rng(0).standard_normal((3, 5)), jnp.float32)
  return lambda x: jnp.einsum('bhwc,ck->bhwk', x[:, ::stride, ::stride], weights)


@pytest.mark.parametrize('size', [(40, 70), (12, 9), (16, 16)])
def test_slide_equals_whole_per_pixel(size):
  images = jnp.asarray(np.random.default_rng(1).standard_normal((2, *size, 3)), jnp.float32)
  net = per_pixel_net(1)
  slide = jax.jit(functools.partial(si.slide_inference, net, out_size=size, crop=(16, 16),
                                    stride=(11, 11)))(images)
  whole = jax.jit(functools.partial(si.whole_inference, net, out_size=size))(images)
  np.testing.assert_allclose(slide, net(images), atol=1e-5)
  np.testing.assert_allclose(whole, net(images), atol=1e-5)


def test_resizes_to_window_then_out_size():
  images = jnp.asarray(np.random.default_rng(2).standard_normal((1, 32, 48, 3)), jnp.float32)
  net = per_pixel_net(4)  # stride-4 logits, as UPerNet's
  whole = si.whole_inference(net, images, (20, 30))
  np.testing.assert_allclose(whole, resize(resize(net(images), (32, 48)), (20, 30)), atol=1e-6)
  slide = si.slide_inference(net, images, (32, 48), crop=(32, 32), stride=(16, 16))
  left = resize(net(images[:, :, :32]), (32, 32))
  right = resize(net(images[:, :, 16:]), (32, 32))
  want = jnp.concatenate([left[:, :, :16], (left[:, :, 16:] + right[:, :, :16]) / 2,
                          right[:, :, 16:]], axis=2)
  np.testing.assert_allclose(slide, want, atol=1e-6)
