"""Records timm 0.4.12 / torchvision outputs that the host transform tests compare against.

Run in an environment with timm==0.4.12, torchvision and pillow (see README.md):

  python tests/testdata/timm_transforms/make_reference.py

Writes reference.npz next to this file. Inputs are generated here from fixed seeds, and the
output is byte-identical from run to run.
"""
import functools
import io
import math
import os
import random
import zipfile

import numpy as np
import PIL
from PIL import Image
import timm
from timm.data import auto_augment, create_transform, transforms_factory
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision import transforms as tv_transforms
from torchvision.transforms import functional as tv_functional

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'reference.npz')
MAGNITUDES = (0.0, 2.6, 6.9, 9.0, 10.0)
OUTPUT_SIZE = 32  # crop and eval output side
NUM_DRAWS = 20000
# Ops whose argument changes sign at random; the 'Increasing' enhancements around 1.
SIGNED = ('Rotate', 'ShearX', 'ShearY', 'TranslateXRel', 'TranslateYRel', 'ColorIncreasing',
          'ContrastIncreasing', 'BrightnessIncreasing', 'SharpnessIncreasing')


def photo(rng, height, width, noise=8.0, low=0, high=255):
  """Photo-like uint8 RGB: bicubic-smoothed random colour fields plus Gaussian noise."""
  coarse = rng.integers(0, 256, (height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
  smooth = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.float64)
  image = smooth + rng.normal(0.0, noise, smooth.shape)
  return np.clip(low + image * (high - low) / 255.0, 0, 255).astype(np.uint8)


def encode(image: Image.Image, fmt: str, **kwargs) -> np.ndarray:
  buffer = io.BytesIO()
  image.save(buffer, fmt, **kwargs)
  return np.frombuffer(buffer.getvalue(), np.uint8)


def load(data: np.ndarray) -> Image.Image:
  """timm's dataset loader."""
  return Image.open(io.BytesIO(data.tobytes())).convert('RGB')


def encoded_images(rng):
  """Small images in every format and mode the loader meets, a few aspect ratios."""
  rgb = Image.fromarray(photo(rng, 60, 80))
  gray = Image.fromarray(photo(rng, 60, 50)[..., 0])  # eval: 43x36, crop top 5.5
  rgba = Image.fromarray(np.concatenate([photo(rng, 20, 90), photo(rng, 20, 90)[..., :1]], -1))
  palette = Image.fromarray(photo(rng, 40, 40)).quantize(32)
  cmyk = Image.fromarray(photo(rng, 48, 36)).convert('CMYK')
  return {
      'jpeg_rgb_60x80': encode(rgb, 'JPEG', quality=90),
      'jpeg_gray_60x50': encode(gray, 'JPEG', quality=90),
      'jpeg_cmyk_48x36': encode(cmyk, 'JPEG', quality=90),
      'png_rgba_20x90': encode(rgba, 'PNG'),
      'png_palette_40x40': encode(palette, 'PNG'),
      'gif_40x40': encode(palette, 'GIF'),
      'bmp_60x80': encode(rgb, 'BMP'),
  }


def timm_train_transform():
  """The official recipe's train transform, built by timm as the official code builds it."""
  return create_transform(224, is_training=True, color_jitter=0.4,
                          auto_augment='rand-m9-mstd0.5-inc1', interpolation='bicubic',
                          re_prob=0.25, re_mode='pixel', re_count=1)


def op_references(rng, rand_augment, out):
  """Each op of both sets at fixed magnitudes and both signs, as timm's AugmentOp applies it."""
  image = Image.fromarray(photo(rng, 20, 32, noise=4.0, low=30, high=220))
  out['op_image'] = np.asarray(image)
  hparams = dict(rand_augment.ops[0].hparams, magnitude_std=0)
  names = sorted(set(auto_augment._RAND_TRANSFORMS) | set(auto_augment._RAND_INCREASING_TRANSFORMS))
  # Python's `random` drives the sign: the first draw after these seeds is > 0.5 (negate) or not.
  seeds = {-1: next(s for s in range(100) if random.Random(s).random() > 0.5),
           1: next(s for s in range(100) if random.Random(s).random() <= 0.5)}
  raises = []
  for name in names:
    level_fn = auto_augment.LEVEL_TO_ARG[name]
    for magnitude in MAGNITUDES if level_fn else MAGNITUDES[-1:]:
      for sign in (-1, 1) if name in SIGNED else (1,):
        op = auto_augment.AugmentOp(name, prob=1.0, magnitude=magnitude, hparams=hparams)
        random.seed(seeds[sign])
        try:
          out[f'op/{name}/{magnitude}/{sign}'] = np.asarray(op(image))
        except ValueError:  # Pillow 13 refuses to posterize to 0 bits.
          raises.append(f'{name}/{magnitude}/{sign}')
  out['op_raises'] = np.array(raises)


def crop_references(images, rrc, out):
  """torchvision's `resized_crop` as timm calls it, at fixed windows; get_params fallbacks."""
  for key, data in images.items():
    image = load(data)
    width, height = image.size
    windows = [(height // 4, width // 3, height // 2, width // 2),
               (1, 2, height - 3, width - 5), (height - 9, width - 7, 9, 7)]
    out[f'crop_windows/{key}'] = np.array(windows, np.int32)
    out[f'crop/{key}'] = np.stack([
        np.asarray(tv_functional.resized_crop(image, *w, [OUTPUT_SIZE, OUTPUT_SIZE],
                                              rrc.interpolation)) for w in windows])

  class Size:  # get_params reads only `.size`
    def __init__(self, width, height):
      self.size = (width, height)

  # (width, height, scale, ratio): no draw fits, so every result is the fallback.
  cases = [(1000, 10, (0.08, 1.0), (3 / 4, 4 / 3)), (10, 1000, (0.08, 1.0), (3 / 4, 4 / 3)),
           (300, 200, (2.0, 3.0), (3 / 4, 4 / 3)), (640, 100, (1.5, 2.0), (0.5, 2.0))]
  out['fallback_cases'] = np.array([(w, h, *s, *r) for w, h, s, r in cases], np.float64)
  out['fallback_windows'] = np.array(
      [RandomResizedCropAndInterpolation.get_params(Size(w, h), s, r) for w, h, s, r in cases],
      np.int32)


def eval_references(images, out):
  """The official evaluation transforms: Resize + CenterCrop, and a square Resize."""
  crop = transforms_factory.transforms_imagenet_eval(
      img_size=OUTPUT_SIZE, crop_pct=0.875, interpolation='bicubic').transforms[:2]
  square = tv_transforms.Resize((OUTPUT_SIZE, OUTPUT_SIZE),
                                interpolation=tv_transforms.InterpolationMode.BICUBIC)
  for key, data in images.items():
    image = load(data)
    out[f'decoded/{key}'] = np.asarray(image)
    out[f'eval_crop/{key}'] = np.asarray(tv_transforms.Compose(crop)(image))
    out[f'eval_square/{key}'] = np.asarray(square(image))


def draw_references(rand_augment, out):
  """timm's randomness, many draws: crop windows, and the ops RandAugment applies."""
  random.seed(0)
  np.random.seed(0)

  class Size:  # get_params reads only `.size`
    size = (500, 375)

  out['draws_crop_image_hw'] = np.array([375, 500], np.int32)
  out['draws_crop'] = np.array([
      RandomResizedCropAndInterpolation.get_params(Size(), (0.08, 1.0), (3 / 4, 4 / 3))
      for _ in range(NUM_DRAWS)], np.int16)

  # Wrap timm's level and op functions to record, per applied op, its index in the op set,
  # its clipped magnitude and its sign (0 for unsigned ops); the image is left alone. Both
  # run only when the op is applied, the level function first.
  names = auto_augment._RAND_INCREASING_TRANSFORMS
  applied = []  # [op index, magnitude, sign]
  levelled = set()  # indices of ops with a level function

  def record_level(level, hparams, index, level_fn):
    args = level_fn(level, hparams)
    name = names[index]
    value = args[0] - 1.0 if name.endswith('Increasing') else args[0]
    sign = (-1 if value < 0 else 1) if name in SIGNED else 0
    applied.append([index, level, sign])
    return args

  def record_op(img, *args, index, **kwargs):
    del args, kwargs
    if index not in levelled:
      applied.append([index, math.nan, 0])
    return img

  for index, op in enumerate(rand_augment.ops):
    if op.level_fn is not None:
      levelled.add(index)
      op.level_fn = functools.partial(record_level, index=index, level_fn=op.level_fn)
    op.aug_fn = functools.partial(record_op, index=index)

  tiny = Image.new('RGB', (4, 4))
  counts = []
  for _ in range(NUM_DRAWS):
    before = len(applied)
    rand_augment(tiny)
    counts.append(len(applied) - before)
  applied = np.array(applied, np.float64)
  out['draws_ra_count'] = np.array(counts, np.int8)
  out['draws_ra_op'] = applied[:, 0].astype(np.int8)
  out['draws_ra_magnitude'] = applied[:, 1].astype(np.float32)
  out['draws_ra_sign'] = applied[:, 2].astype(np.int8)


def recipe(transform, out):
  """The settings timm's factory chose, for the tests to check the port's constants."""
  rrc, flip, rand_augment = transform.transforms[:3]
  names = auto_augment._RAND_INCREASING_TRANSFORMS
  assert [(op.aug_fn, op.level_fn) for op in rand_augment.ops] == [
      (auto_augment.NAME_TO_OP[n], auto_augment.LEVEL_TO_ARG[n]) for n in names]
  first = rand_augment.ops[0]
  assert all(op.kwargs == first.kwargs and op.hparams == first.hparams and
             (op.prob, op.magnitude) == (first.prob, first.magnitude)
             for op in rand_augment.ops)
  out['recipe_ra_names'] = np.array(names)
  out['recipe_ra_plain_names'] = np.array(auto_augment._RAND_TRANSFORMS)
  out['recipe_ra_num_layers'] = np.array(rand_augment.num_layers)
  out['recipe_ra_prob'] = np.array(first.prob)
  out['recipe_ra_magnitude'] = np.array(first.magnitude, np.float64)
  out['recipe_ra_magnitude_std'] = np.array(first.magnitude_std)
  out['recipe_ra_fillcolor'] = np.array(first.kwargs['fillcolor'])
  out['recipe_ra_resample'] = np.array(int(first.kwargs['resample']))
  out['recipe_ra_translate_pct'] = np.array(first.hparams.get('translate_pct', 0.45))
  out['recipe_crop_scale'] = np.array(rrc.scale)
  out['recipe_crop_ratio'] = np.array(rrc.ratio)
  out['recipe_crop_resample'] = np.array(int(rrc.interpolation))
  out['recipe_hflip_p'] = np.array(flip.p)


def save(path, arrays):
  """np.savez_compressed with fixed zip timestamps, so that reruns are byte-identical."""
  with zipfile.ZipFile(path, 'w', zipfile.ZIP_DEFLATED) as archive:
    for key, value in arrays.items():
      info = zipfile.ZipInfo(key + '.npy', date_time=(1980, 1, 1, 0, 0, 0))
      info.compress_type = zipfile.ZIP_DEFLATED
      with archive.open(info, 'w') as f:
        np.lib.format.write_array(f, np.asanyarray(value), allow_pickle=False)


def main():
  rng = np.random.default_rng(20231016)
  transform = timm_train_transform()
  out = {'versions': np.array([timm.__version__, PIL.__version__])}
  recipe(transform, out)
  images = encoded_images(rng)
  out.update({f'encoded/{k}': v for k, v in images.items()})
  op_references(rng, transform.transforms[2], out)
  crop_references(images, transform.transforms[0], out)
  eval_references(images, out)
  draw_references(transform.transforms[2], out)
  save(OUT, out)


if __name__ == '__main__':
  main()
