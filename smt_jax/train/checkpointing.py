"""Preemption-safe training checkpoints: an orbax CheckpointManager under WORKDIR/checkpoints.

Each step directory holds two items: `state` (the sharded TrainState, written by every
process for its own shards) and `data` (what fixes the input stream,
`data.stream_identity`, and a checksum of every array of `state`, see fingerprint.py, as
JSON). The input stream needs no other state: it continues from the step number, on any
number of processes. Orbax writes a step into a temporary directory and renames it only
once every item of every process is complete, so a crash during a save leaves the
previous checkpoint as the one resume picks up. Saves are asynchronous: training
continues while the arrays are written.

Resuming takes the newest step that restores completely: its commit marker is there,
every array reads back and matches its saved checksum. Newer steps that fail are moved
to checkpoints/damaged/ (never deleted), each reported in one message; every process
tries each step and they adopt the first one that restored on all of them.

Kept: the last `keep` steps plus the step with the best `best_metric` (the task's:
'eval/top1' for classification, 'eval/mIoU' for segmentation).
"""
import contextlib
import json
import os
from typing import Any, Dict, List, Optional, Tuple

from absl import logging
from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

from smt_jax.train import fingerprint

# Orbax (0.12.3 on) writes this file into a step directory as the last part of a save, on
# every file system; a step without it was not finished (or not completely copied).
COMMIT_MARKER = 'commit_success.txt'
DAMAGED = 'damaged'


class CheckpointError(Exception):
  """A checkpoint that cannot be restored or written; the message says where and what to do."""


def _allgather_json(obj: Any) -> list:
  """Every process's `obj` (JSON-able), in process order, on every process."""
  if jax.process_count() == 1:
    return [obj]
  data = np.frombuffer(json.dumps(obj).encode(), np.uint8)
  sizes = multihost_utils.process_allgather(np.array([data.size], np.int32))
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:data.size] = data
  every = multihost_utils.process_allgather(padded)
  return [json.loads(bytes(row[:int(n)]).decode()) for row, n in zip(every, sizes.ravel())]


def _innermost(error: BaseException) -> BaseException:
  while error.__cause__ is not None or error.__context__ is not None:
    error = error.__cause__ or error.__context__
  return error


def _describe(error: BaseException, names: List[str]) -> str:
  """'<array>: <what failed>' from a restore error (orbax nests the useful one)."""
  text = ' '.join(f'{error} {_innermost(error)}'.split())
  array = next((n for n in sorted(names, key=len, reverse=True) if n + '/' in text
                or f'"{n}' in text), None)
  cause = _innermost(error)
  what = ' '.join(str(cause).split()) or type(cause).__name__
  if len(what) > 400:
    what = what[:400] + '...'
  return f'{array}: {what}' if array else what


def check_workdir(workdir: str) -> None:
  """One CheckpointError if `workdir`, or the checkpoints/ in it, exists but is no directory."""
  for path in (workdir, os.path.join(workdir, 'checkpoints')):
    if os.path.exists(path) and not os.path.isdir(path):
      raise CheckpointError(
          f'--workdir: {path} is a file; the workdir must be a directory (created if '
          'missing) holding checkpoints/ and the TensorBoard logs. Give another --workdir '
          'or move the file away.')


class Checkpointer:
  """Saves and restores (TrainState, data iterator state) by step."""

  def __init__(self, workdir: str, keep: int = 3, asynchronous: bool = True,
               best_metric: str = 'eval/top1'):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    policy = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(n=keep),
        checkpoint_managers.BestN(get_metric_fn=lambda m: m[best_metric], n=1,
                                  keep_checkpoints_without_metrics=False)])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, enable_async_checkpointing=asynchronous,
        cleanup_tmp_directories=True, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=('state', 'data'))
    self._saving = None  # the step whose save may still be running
    self._failure = None  # the first failed save, re-raised by later saves and waits

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state, stream: Dict[str, Any],
           metrics: Optional[Dict[str, float]] = None) -> None:
    """Starts an asynchronous save of `state` and the input `stream` identity at `step`."""
    data = {'stream': stream, 'fingerprints': fingerprint.fingerprints(state)}
    if metrics is not None:
      metrics = {k: float(v) for k, v in metrics.items()}
    with self._save_errors(step):
      self.manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data)),
          metrics=metrics, force=True)
      self._saving = step

  def restore_latest(self, abstract_state) -> Optional[Tuple[int, Any, Dict[str, Any]]]:
    """(step, state, stream identity) of the newest step that restores completely.

    `abstract_state` gives the shapes and target shardings. Newer steps that fail are
    reported and moved to checkpoints/damaged/. None if there is no checkpoint; raises
    CheckpointError, moving nothing, if there are checkpoints and none restores.
    """
    damaged = []
    for step in sorted(self.manager.all_steps(), reverse=True):
      restored, problem = self._read(step, abstract_state)
      # Agree before any collective: a read may fail on one process only.
      failed = [(i, p) for i, p in enumerate(_allgather_json(problem)) if p]
      if failed:
        index, problem = failed[0]
        if jax.process_count() > 1:
          problem = f'process {index}: {problem}'
      else:
        state, data = restored
        problem = self._verify(state, data)  # the same on every process
      if problem is None:
        self._move_aside(damaged, step)
        logging.info('Resuming from checkpoint step %d in %s.', step, self.directory)
        return step, state, data.get('stream', {})
      damaged.append((step, problem))
    if damaged:
      listing = '; '.join(f'step {s}: {p}' for s, p in damaged)
      raise CheckpointError(
          f'No checkpoint in {self.directory} restores completely ({listing}). Nothing was '
          'moved or deleted. Restore the step directories from a copy, or move them out '
          f'of {self.directory} to train from the start.')
    return None

  def _read(self, step: int, abstract_state) -> Tuple[Any, Optional[str]]:
    """((state, data item), None), or (None, what is wrong), on this process alone.

    Reads through the item handlers, which wait for no other process, so a read that
    fails on one process only cannot leave the others waiting at a barrier.
    """
    path = epath.Path(self.directory) / str(step)
    if not (path / COMMIT_MARKER).exists():
      return None, f'its commit marker {COMMIT_MARKER} is missing (an unfinished save or copy)'
    names = [fingerprint.leaf_name(p)
             for p, _ in jax.tree_util.tree_leaves_with_path(abstract_state)]
    state_handler = ocp.StandardCheckpointHandler()
    try:
      state = state_handler.restore(path / 'state',
                                    args=ocp.args.StandardRestore(abstract_state))
      data = ocp.JsonCheckpointHandler().restore(path / 'data', args=ocp.args.JsonRestore())
    except Exception as e:  # pylint: disable=broad-except
      return None, _describe(e, names)
    finally:
      state_handler.close()
    return (state, data), None

  def _verify(self, state, data: Dict[str, Any]) -> Optional[str]:
    """What is wrong with the arrays read, by their saved checksums (None: nothing)."""
    bad = fingerprint.mismatches(data.get('fingerprints', {}), state)
    if not bad:
      return None
    more = len(bad) - 1
    return (f'{bad[0]}: its values differ from those saved (checksum mismatch'
            + (f'; {more} more array{"s" * (more > 1)} too)' if more else ')'))

  def _move_aside(self, damaged: List[Tuple[int, str]], resumed: int) -> None:
    """Moves each damaged step to checkpoints/damaged/<step> and reports it (process 0)."""
    if not damaged:
      return
    if jax.process_index() == 0:
      aside = os.path.join(self.directory, DAMAGED)
      os.makedirs(aside, exist_ok=True)
      for step, problem in damaged:
        target, n = os.path.join(aside, str(step)), 1
        while os.path.exists(target):
          target, n = os.path.join(aside, f'{step}.{n}'), n + 1
        os.rename(os.path.join(self.directory, str(step)), target)
        logging.warning('Checkpoint step %d in %s is damaged (%s); moved it to %s and '
                        'resumed from step %d.', step, self.directory, problem, target,
                        resumed)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices('smt_jax:damaged_checkpoints_moved')
    self.manager.reload()

  def _committed_steps(self) -> List[int]:
    """Steps on disk that carry their commit marker."""
    return sorted(int(name) for name in os.listdir(self.directory) if name.isdigit()
                  and os.path.exists(os.path.join(self.directory, name, COMMIT_MARKER)))

  @contextlib.contextmanager
  def _save_errors(self, step: Optional[int]):
    """Turns a failed save into one CheckpointError naming the directory and the step.

    An asynchronous save's error surfaces at the next save or wait, so the failed step
    is the one still being saved if it never got its commit marker. Later errors of the
    same run re-raise the first one.
    """
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      if self._failure is None:
        failed = step
        if self._saving is not None and self._saving not in self._committed_steps():
          failed = self._saving
        previous = [s for s in self._committed_steps() if s != failed]
        cause = _innermost(e)
        what = ' '.join(str(cause).split())[:400] or type(cause).__name__
        self._failure = CheckpointError(
            f'Could not write checkpoint step {failed} to {self.directory}: {what}. The '
            'checkpoints already there are unchanged (newest: '
            f'{f"step {max(previous)}" if previous else "none"}). Free space there or '
            'make it writable, then rerun the same command to resume.')
      raise self._failure from e

  def wait(self) -> None:
    with self._save_errors(self._saving):
      self.manager.wait_until_finished()
    self._saving = None

  def close(self) -> None:
    try:
      self.wait()
    finally:
      with self._save_errors(None):
        self.manager.close()


def abstract_with_shardings(abstract_tree, shardings):
  """ShapeDtypeStructs carrying the target shardings, for restoring straight onto devices."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_tree, shardings)
