"""Trains or evaluates SMT: `python -m smt_jax.main --config=configs/smt_s.py --workdir=DIR`.

Every config field can be overridden, e.g. `--config.batch_size=4096`. On TPU VMs
`jax.distributed` finds its peers itself; elsewhere give several processes
`--coordinator_address=HOST:PORT --num_processes=N --process_id=I`.

The terminal shows a start line, progress lines and evaluation results; library logs
(orbax, JAX, clu, TensorFlow) go to WORKDIR/log.txt (process i > 0: log.process_i.txt),
warnings and errors to both. `--verbosity=0` (or --logtostderr, --alsologtostderr) keeps
them all on the terminal instead.
"""
import glob
import io
import os
import sys
import tempfile
from typing import Optional


def _import_tensorflow():
  """(tensorflow, its start-up notices): the notices are held back from the terminal.

  TensorFlow's C++ code writes them (oneDNN, CPU features) to file descriptor 2 at import,
  before flags are parsed or a log file exists; `_log_to_file` writes them to the log.
  """
  sys.stderr.flush()
  terminal = os.dup(2)
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      import tensorflow  # pylint: disable=g-import-not-at-top
    finally:
      os.dup2(terminal, 2)
      os.close(terminal)
    held.seek(0)
    return tensorflow, held.read().decode(errors='replace')


tf, _TF_NOTICES = _import_tensorflow()

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from smt_jax import data
from smt_jax import pretrained
from smt_jax import weights
from smt_jax.train import train_and_evaluate
from smt_jax.train import progress
from smt_jax.train.checkpointing import CheckpointError, check_workdir
from smt_jax.train.validate import ConfigError

FLAGS = flags.FLAGS


def _define_flags():
  """Flags live here, not at import, so importing this module defines no flags."""
  config_flags.DEFINE_config_file('config', None, 'Training recipe (a configs/*.py file).',
                                  lock_config=True)
  flags.DEFINE_string('workdir', None, 'Checkpoints, TensorBoard logs; reruns resume here.')
  flags.DEFINE_string('coordinator_address', None, 'HOST:PORT of process 0 (multi-process).')
  flags.DEFINE_integer('num_processes', None, 'Number of processes (multi-process).')
  flags.DEFINE_integer('process_id', None, 'This process, 0 .. num_processes - 1.')
  flags.mark_flags_as_required(['config', 'workdir'])


def _on_tpu_vm() -> bool:
  return bool(os.environ.get('TPU_ACCELERATOR_TYPE') or glob.glob('/dev/accel*')
              or glob.glob('/dev/vfio/[0-9]*'))


def _hold_logs() -> Optional[io.StringIO]:
  """Keeps absl's (and so Python's) log records in memory until `_log_to_file` has a file.

  Start-up records (the distributed runtime's, JAX's backend probing) come before the
  workdir is known. Warnings and errors still reach the terminal as they come. None if
  --verbosity, --logtostderr or --alsologtostderr asks for the logs on the terminal.
  """
  if any(FLAGS[name].present for name in ('verbosity', 'logtostderr', 'alsologtostderr')):
    sys.stderr.write(_TF_NOTICES)
    return None
  held = io.StringIO()
  logging.get_absl_handler().python_handler.setStream(held)
  if not FLAGS['stderrthreshold'].present:
    FLAGS.stderrthreshold = 'warning'
  return held


def _log_to_file(workdir: str, held: Optional[io.StringIO]) -> None:
  """Sends the held log records, and those to come, to a file in `workdir`."""
  if held is None:
    return
  os.makedirs(workdir, exist_ok=True)
  index = jax.process_index()
  name = 'log.txt' if index == 0 else f'log.process_{index}.txt'
  log = open(os.path.join(workdir, name), 'a', encoding='utf-8')  # pylint: disable=R1732
  log.write(_TF_NOTICES + held.getvalue())
  logging.get_absl_handler().python_handler.setStream(log)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  # TensorFlow only feeds data; keep it off the accelerators JAX uses.
  tf.config.set_visible_devices([], 'GPU')
  tf.config.set_visible_devices([], 'TPU')
  held = _hold_logs()
  if FLAGS.coordinator_address:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                               FLAGS.process_id)
  elif _on_tpu_vm():
    jax.distributed.initialize()
  try:
    workdir = os.path.abspath(os.path.expanduser(FLAGS.workdir))
    check_workdir(workdir)  # before the log file goes there
    _log_to_file(workdir, held)
    logging.info('Process %d of %d; %d local devices, %d in all (%s).', jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count(),
                 jax.devices()[0].platform)
    _, metrics = train_and_evaluate(FLAGS.config, workdir)
  except (ConfigError, data.DatasetNotFoundError, data.CorruptImageError, CheckpointError,
          pretrained.PretrainedError, weights.WeightsError) as e:
    sys.exit(f'error: {e}')  # the message says what to fix; a traceback would bury it
  if FLAGS.config.eval_only and metrics and jax.process_index() == 0:
    print(progress.result_line(metrics))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
