"""smt_jax.data.seg_augment against OpenCV's outputs (kept in testdata) and against mmseg's
definitions of each transform, with scripted random draws so every case is hand-checkable."""
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from smt_jax.data import device_augment
from smt_jax.data import seg_augment as sa

REFERENCE = pathlib.Path(__file__).parents[1] / 'testdata' / 'seg_augment_opencv' / 'reference.npz'


class Script:
  """A numpy Generator stand-in returning scripted values; checks each call's kind and range."""

  def __init__(self, *draws):
    self.draws = list(draws)

  def _next(self, kind, low, high):
    want_kind, value = self.draws.pop(0)
    assert want_kind == kind, (kind, want_kind)
    assert low <= value < high or (kind == 'uniform' and value == high), (kind, value, low, high)
    return value

  def random(self):
    return self._next('random', 0, 1)

  def integers(self, low, high=None):
    return self._next('integers', *((0, low) if high is None else (low, high)))

  def uniform(self, low, high):
    return self._next('uniform', low, high)


@pytest.fixture(scope='module')
def ref():
  return np.load(REFERENCE)


def sizes(ref, prefix):
  return [tuple(map(int, k[len(prefix):].split('x'))) for k in ref.files if k.startswith(prefix)]


def test_nearest_equals_opencv(ref):
  for size in sizes(ref, 'nearest_'):
    np.testing.assert_array_equal(sa.resize_nearest(ref['label'], size),
                                  ref[f'nearest_{size[0]}x{size[1]}'])


def test_bilinear_within_one_of_opencv(ref):
  for size in sizes(ref, 'bilinear_'):
    got = sa.resize_bilinear(ref['image'], size).astype(int)
    want = ref[f'bilinear_{size[0]}x{size[1]}']
    assert np.abs(got - want).max() <= 1
    assert (got == want).mean() > 0.99
  np.testing.assert_array_equal(sa.resize_bilinear(ref['image2x'], (18, 26)),
                                ref['bilinear2x_18x26'])


def test_hsv_equals_opencv(ref):
  np.testing.assert_array_equal(sa.rgb_to_hsv(ref['rgb']), ref['rgb_to_hsv'])
  np.testing.assert_array_equal(sa.hsv_to_rgb(ref['hsv']), ref['hsv_to_rgb'])


def test_rescale_size():
  # (h, w), (long, short) bound -> factor min(long / max side, short / min side), rounded
  assert sa.rescale_size(512, 683, (2048, 512)) == (512, 683)  # factor 1
  assert sa.rescale_size(300, 400, (1024, 256)) == (256, 341)  # 256/300: 341.33
  assert sa.rescale_size(100, 1000, (2048, 512)) == (205, 2048)  # long side binds: 204.8
  assert sa.rescale_size(3, 5, (10, 4)) == (4, 7)  # 4/3: 6.67 rounds up


def test_random_scale_size_draws_ratio():
  cfg = sa.default_seg_aug_config()
  # ratio 0.5 + 0.25 * 1.5 = 0.875: scale (1792, 448): factor 448 / 300
  assert sa.random_scale_size(300, 400, Script(('random', 0.25)), cfg) == (448, 597)


def test_nearest_keeps_ignore():
  label = np.full((300, 400), 255, np.uint8)
  label[:150] = 7
  out = sa.resize_nearest(label, (448, 597))
  assert (out[:224] == 7).all() and (out[224:] == 255).all()


@pytest.mark.parametrize('shape,size', [((37, 53), (74, 106)), ((37, 53), (20, 29)),
                                        ((36, 52), (18, 26)), ((37, 53), (37, 53))])
def test_bilinear_box_is_a_slice_of_the_whole(shape, size):
  image = np.random.default_rng(3).integers(0, 256, (*shape, 3), dtype=np.uint8)
  whole = sa.resize_bilinear(image, size)
  for box in [(slice(0, 5), slice(0, 7)), (slice(3, 17), slice(9, 100)),
              (slice(size[0] - 4, size[0] + 10), slice(size[1] - 1, size[1]))]:
    np.testing.assert_array_equal(sa.resize_bilinear(image, size, box), whole[box])


def crop_cfg(crop_size, cat_max_ratio=0.75):
  cfg = sa.default_seg_aug_config()
  cfg.crop_size, cfg.cat_max_ratio = crop_size, cat_max_ratio
  return cfg


def test_crop_rejects_single_class_box():
  label = np.zeros((4, 8), np.uint8)
  label[:, 4:] = [[2, 3, 2, 3]] * 4  # left box: class 0 only; right box: 2 and 3, half each
  draws = [('integers', 0), ('integers', 0), ('integers', 0), ('integers', 4)]
  box = sa.crop_box(label, Script(*draws), crop_cfg((4, 4)))
  np.testing.assert_array_equal(label[box], label[:, 4:])


def test_crop_ratio_leaves_out_ignored_pixels():
  label = np.full((4, 4), 1, np.uint8)
  label[0, 0] = 2
  label[3] = 255  # 11 x class 1, 1 x class 2, 4 ignored: 11/12 >= 0.75 (11/16 would pass)
  script = Script(*[('integers', 0)] * 22)
  sa.crop_box(label, script, crop_cfg((4, 4)))
  assert not script.draws  # rejected 10 times, then the 11th box is kept unchecked


def test_crop_keeps_the_eleventh_box():
  label = np.zeros((5, 5), np.uint8)  # every box single-class
  label[4, 4] = 9
  draws = [('integers', 0)] * 20 + [('integers', 1), ('integers', 1)]
  box = sa.crop_box(label, Script(*draws), crop_cfg((4, 4)))
  assert box == (slice(1, 5), slice(1, 5))


def test_crop_smaller_image_and_no_ratio():
  label = np.arange(6, dtype=np.uint8).reshape(2, 3)
  script = Script(('integers', 0), ('integers', 0))  # margins 0: one box, no re-draw
  assert sa.crop_box(label, script, crop_cfg((4, 4), 1.0)) == (slice(0, 2), slice(0, 3))


def test_flip_both_or_neither():
  cfg = sa.default_seg_aug_config()
  image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
  label = np.array([[1, 2, 255], [4, 5, 6]], np.uint8)
  flipped = sa.random_flip(image, label, Script(('random', 0.49)), cfg)
  np.testing.assert_array_equal(flipped[0], image[:, ::-1])
  np.testing.assert_array_equal(flipped[1], [[255, 2, 1], [6, 5, 4]])
  kept = sa.random_flip(image, label, Script(('random', 0.5)), cfg)
  np.testing.assert_array_equal(kept[0], image)
  np.testing.assert_array_equal(kept[1], label)


def convert(x, alpha=1.0, beta=0.0):  # mmseg PhotoMetricDistortion.convert
  return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def hue(x, shift):
  hsv = sa.rgb_to_hsv(x)
  hsv[..., 0] = (hsv[..., 0].astype(int) + shift) % 180
  return sa.hsv_to_rgb(hsv)


def saturation(x, alpha):
  hsv = sa.rgb_to_hsv(x)
  hsv[..., 1] = convert(hsv[..., 1], alpha)
  return sa.hsv_to_rgb(hsv)


@pytest.fixture(scope='module')
def photo_image():
  return np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)


def test_photometric_contrast_first(photo_image):
  cfg = sa.default_seg_aug_config()
  draws = [('integers', 1), ('uniform', 10.0),  # brightness +10
           ('integers', 1),  # mode 1: contrast first
           ('integers', 1), ('uniform', 1.25),  # contrast x1.25
           ('integers', 0),  # no saturation
           ('integers', 1), ('integers', -18)]  # hue -18 (range -18..17)
  got = sa.photometric_distortion(photo_image, Script(*draws), cfg)
  want = hue(convert(convert(photo_image, beta=10.0), alpha=1.25), -18)
  np.testing.assert_array_equal(got, want)


def test_photometric_contrast_last(photo_image):
  cfg = sa.default_seg_aug_config()
  draws = [('integers', 0),  # no brightness
           ('integers', 0),  # mode 0: contrast last
           ('integers', 1), ('uniform', 0.5),  # saturation x0.5
           ('integers', 1), ('integers', 17),  # hue +17
           ('integers', 1), ('uniform', 1.5)]  # contrast x1.5, after the colour steps
  got = sa.photometric_distortion(photo_image, Script(*draws), cfg)
  want = convert(hue(saturation(photo_image, 0.5), 17), alpha=1.5)
  np.testing.assert_array_equal(got, want)
  other_order = hue(saturation(convert(photo_image, alpha=1.5), 0.5), 17)
  assert (got != other_order).any()


def test_pad_image_mean_label_ignore():
  image = np.full((3, 2, 3), 7, np.uint8)
  label = np.array([[0, 1], [2, 255], [4, 5]], np.uint8)
  out_image, out_label = sa.pad(image, label, (5, 4))
  assert out_image.shape == (5, 4, 3) and out_label.shape == (5, 4)
  np.testing.assert_array_equal(out_image[:3, :2], image)
  np.testing.assert_array_equal(out_label[:3, :2], label)
  assert (out_image[3:] == sa.PAD_RGB).all() and (out_image[:, 2:] == sa.PAD_RGB).all()
  assert (out_label[3:] == 255).all() and (out_label[:, 2:] == 255).all()
  # mmseg pads the normalized image with 0
  assert np.abs(device_augment.normalize(jnp.asarray(out_image[4, 3]))).max() < 0.01


@pytest.mark.parametrize('shape', [(300, 400), (120, 90), (700, 500)])
def test_train_example_shapes_and_labels(shape):
  rng = np.random.default_rng(shape[0])
  image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
  label = rng.integers(0, 5, shape, dtype=np.uint8)
  label[:10] = 255
  cfg = sa.default_seg_aug_config()
  out_image, out_label = sa.train_example(image, label, rng, cfg)
  assert out_image.shape == (512, 512, 3) and out_image.dtype == np.uint8
  assert out_label.shape == (512, 512) and out_label.dtype == np.uint8
  assert set(np.unique(out_label)) <= set(range(5)) | {255}


def test_eval_example_resizes_image_only():
  cfg = sa.default_seg_aug_config()
  image = np.zeros((300, 400, 3), np.uint8)
  label = np.ones((300, 400), np.uint8)
  out_image, out_label = sa.eval_example(image, label, cfg)
  assert out_image.shape == (512, 683, 3)
  assert out_label is label
