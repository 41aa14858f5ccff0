"""Preemption-safe training checkpoints: an orbax CheckpointManager under WORKDIR/checkpoints.

Each step directory holds two items: `state` (the sharded TrainState, written by every
process for its own shards) and `data` (every process's input-iterator state as JSON).
Orbax writes a step into a temporary directory and renames it only once every item of
every process is complete, and `latest_step` never lists an unfinished step, so a crash
during a save leaves the previous checkpoint as the one resume picks up. Saves are
asynchronous: training continues while the arrays are written.

Kept: the last `keep` steps plus the step with the best 'eval/top1'.
"""
import json
import os
from typing import Any, Dict, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import checkpoint_managers

BEST_METRIC = 'eval/top1'


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


class Checkpointer:
  """Saves and restores (TrainState, data iterator state) by step."""

  def __init__(self, workdir: str, keep: int = 3, asynchronous: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    policy = checkpoint_managers.AnyPreservationPolicy([
        checkpoint_managers.LatestN(n=keep),
        checkpoint_managers.BestN(get_metric_fn=lambda m: m[BEST_METRIC], n=1,
                                  keep_checkpoints_without_metrics=False)])
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policy, enable_async_checkpointing=asynchronous,
        cleanup_tmp_directories=True, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=('state', 'data'))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def save(self, step: int, state, data_state: Dict[str, Any],
           metrics: Optional[Dict[str, float]] = None) -> None:
    """Starts an asynchronous save of `state` and this process's `data_state` at `step`."""
    data = {'processes': _allgather_json(data_state)}
    if metrics is not None:
      metrics = {k: float(v) for k, v in metrics.items()}
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data)),
        metrics=metrics, force=True)

  def restore(self, step: int, abstract_state) -> Tuple[Any, Dict[str, Any]]:
    """(state placed as `abstract_state`'s shardings, this process's data state)."""
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    processes = restored['data']['processes']
    if len(processes) != jax.process_count():
      raise ValueError(f'Checkpoint {step} in {self.directory} was written by '
                       f'{len(processes)} processes; resuming needs the same number, '
                       f'not {jax.process_count()}.')
    return restored['state'], processes[jax.process_index()]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_with_shardings(abstract_tree, shardings):
  """ShapeDtypeStructs carrying the target shardings, for restoring straight onto devices."""
  return jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_tree, shardings)
