"""Session fixtures: a tiny imagenet2012 prepared by the real TFDS builder (ArrayRecord), an
id folder."""
import pytest
import tensorflow_datasets as tfds

from . import data_testing


@pytest.fixture(scope='session')
def imagenet_data_dir(tmp_path_factory) -> str:
  root = tmp_path_factory.mktemp('imagenet')
  data_testing.write_imagenet_manual_dir(root / 'manual')
  builder = tfds.builder('imagenet2012', data_dir=str(root / 'data'))
  builder.download_and_prepare(
      file_format='array_record', download_config=tfds.download.DownloadConfig(manual_dir=str(root / 'manual')))
  return str(root / 'data')


@pytest.fixture(scope='session')
def id_folder(tmp_path_factory) -> str:
  return str(data_testing.write_id_folder(tmp_path_factory.mktemp('id_folder')))
