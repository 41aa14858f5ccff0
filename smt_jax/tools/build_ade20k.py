"""Builds the ade20k TFDS dataset (ArrayRecord, for tfds.data_source) from the official zip.

    python -m smt_jax.tools.build_ade20k --manual_dir=DIR_WITH_ZIP --data_dir=TFDS_DATA_DIR

DIR_WITH_ZIP holds ADEChallengeData2016.zip, unextracted. See smt_jax/data/ade20k.py.
"""
import sys

from absl import app
from absl import flags

from smt_jax.data import ade20k

FLAGS = flags.FLAGS


def main(argv):
  del argv
  try:
    builder = ade20k.build(FLAGS.manual_dir, FLAGS.data_dir)
  except (FileNotFoundError, ValueError) as e:
    sys.exit(f'error: {e}')  # the message says what to fix; a traceback would bury it
  print(f'Built {builder.info.full_name} in {builder.data_dir}')


def _define_flags():
  """Flags live here, not at import, so importing this module defines no flags."""
  flags.DEFINE_string('manual_dir', None, f'Folder holding {ade20k.ZIP_NAME}.')
  flags.DEFINE_string('data_dir', None, 'TFDS data folder to write into.')
  flags.mark_flags_as_required(['manual_dir', 'data_dir'])


if __name__ == '__main__':
  _define_flags()
  app.run(main)
