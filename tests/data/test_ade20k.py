"""The ade20k builder, run for real on a small zip with the official layout, in ArrayRecord,
read back with random access through tfds.data_source."""
import io
import subprocess
import sys
import zipfile

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from smt_jax.data import ade20k

SIZES = {'training': [(37, 50), (64, 48), (30, 30)], 'validation': [(41, 29), (52, 60)]}


def write_zip(path):
  """ADEChallengeData2016.zip with SIZES images per split; returns {file_name: (jpeg, raw)}.

  Every annotation holds 0 ("other") in its first row and 150 in its last pixel."""
  rng = np.random.default_rng(0)
  examples = {}
  with zipfile.ZipFile(path, 'w') as archive:
    for folder, sizes in SIZES.items():
      kind = 'train' if folder == 'training' else 'val'
      for i, (h, w) in enumerate(sizes):
        stem = f'ADE_{kind}_{i + 1:08d}'
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        jpeg = io.BytesIO()
        Image.fromarray(image).save(jpeg, format='JPEG', quality=90)
        raw = rng.integers(1, 151, (h, w), dtype=np.uint8)
        raw[0] = 0
        raw[-1, -1] = 150
        png = io.BytesIO()
        Image.fromarray(raw).save(png, format='PNG')
        archive.writestr(f'ADEChallengeData2016/images/{folder}/{stem}.jpg', jpeg.getvalue())
        archive.writestr(f'ADEChallengeData2016/annotations/{folder}/{stem}.png',
                         png.getvalue())
        examples[f'{stem}.jpg'] = (jpeg.getvalue(), raw)
  return examples


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  root = tmp_path_factory.mktemp('ade20k')
  (root / 'manual').mkdir()
  examples = write_zip(root / 'manual' / ade20k.ZIP_NAME)
  result = subprocess.run(
      [sys.executable, '-m', 'smt_jax.tools.build_ade20k', f'--manual_dir={root / "manual"}',
       f'--data_dir={root / "data"}'], capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'Built ade20k/1.0.0 in {root / "data" / "ade20k" / "1.0.0"}' in result.stdout
  return root, examples


def test_class_names():
  assert len(ade20k.CLASS_NAMES) == ade20k.NUM_CLASSES == 150
  assert ade20k.CLASS_NAMES[:3] == ['wall', 'building', 'sky']
  assert ade20k.CLASS_NAMES[7] == 'bed' and ade20k.CLASS_NAMES[-1] == 'flag'


def test_reduce_zero_label():
  raw = np.array([[0, 1, 2], [149, 150, 0]], np.uint8)
  np.testing.assert_array_equal(ade20k.reduce_zero_label(raw),
                                [[255, 0, 1], [148, 149, 255]])


def test_array_record_build_read_back(built):
  root, examples = built
  data_dir = root / 'data'
  assert list((data_dir / 'ade20k' / '1.0.0').glob('ade20k-train.array_record-*'))
  for split, folder in (('train', 'training'), ('validation', 'validation')):
    source = tfds.data_source('ade20k', split=split, data_dir=str(data_dir))
    assert len(source) == len(SIZES[folder])
    raw_bytes = tfds.data_source('ade20k', split=split, data_dir=str(data_dir),
                                 decoders={'image': tfds.decode.SkipDecoding()})
    seen = set()
    for i in reversed(range(len(source))):  # random access, any order
      example = source[i]
      name = example['file_name'].decode() if isinstance(example['file_name'], bytes) \
          else example['file_name']
      jpeg, raw = examples[name]
      assert raw_bytes[i]['image'] == jpeg  # the zip's bytes, not re-encoded
      np.testing.assert_array_equal(example['image'], np.asarray(Image.open(io.BytesIO(jpeg))))
      label = example['segmentation']
      assert label.shape == raw.shape + (1,) and label.dtype == np.uint8
      np.testing.assert_array_equal(label[..., 0], ade20k.reduce_zero_label(raw))
      assert (label[0] == 255).all() and label[-1, -1, 0] == 149
      seen.add(name)
    assert seen == {n for n in examples if ('_train_' in n) == (split == 'train')}
  info = tfds.builder('ade20k', data_dir=str(data_dir)).info
  assert info.metadata['class_names'] == ade20k.CLASS_NAMES


def test_missing_zip_names_file_and_folder(tmp_path):
  """The folder exists (a TFDS builder would pass it on) but holds no zip."""
  (tmp_path / 'manual').mkdir()
  (tmp_path / 'manual' / 'other.zip').write_bytes(b'')
  with pytest.raises(FileNotFoundError, match=f'{ade20k.ZIP_NAME} not found in the manual '
                     f'folder {tmp_path / "manual"}'):
    tfds.builder('ade20k', data_dir=str(tmp_path / 'data')).download_and_prepare(
        file_format='array_record',
        download_config=tfds.download.DownloadConfig(manual_dir=str(tmp_path / 'manual')))


def test_missing_folder_is_one_error_line(tmp_path):
  """No folder at all (TFDS's own check would name no file): the tool's one-line error."""
  result = subprocess.run(
      [sys.executable, '-m', 'smt_jax.tools.build_ade20k', f'--manual_dir={tmp_path / "none"}',
       f'--data_dir={tmp_path / "data"}'], capture_output=True, text=True, check=False)
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr
  assert f'error: {ade20k.ZIP_NAME} not found in the manual folder {tmp_path / "none"}' \
      in result.stderr
  assert 'python -m smt_jax.tools.build_ade20k --manual_dir=' in result.stderr
