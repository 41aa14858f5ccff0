"""The global example stream: which example fills each row of each global batch.

Training. The stream is one endless sequence of examples: number n = step * B + row (B the
global batch size) is position n mod N of epoch n // N, and epoch e visits the N examples of
the split in a permutation that depends only on (seed, e). So every example appears exactly
once per epoch, epochs differ in order, and batches run across epoch boundaries, dropping
nothing. The randomness that augments an example depends only on (seed, epoch, example
index). Nothing here depends on how many processes read the stream: each process builds
only its own rows of each global batch (`process_rows`), and a run resumes from the step
number alone, on any number of processes, without replaying anything.

The permutation is Grain's `index_shuffle` (a keyed bijection evaluated per index, no
table), keyed by a hash of (seed, epoch) from numpy's `SeedSequence`; per-example generators
are numpy `PCG64` seeded by `SeedSequence([seed, epoch, index])`.

Evaluation. Global batch b holds examples [b * B, (b + 1) * B) of the split in stored order;
the rows past the end are padding, with mask False.
"""
from typing import Optional, Tuple

import grain
import jax
import numpy as np

_SHUFFLE_ROUNDS = 4


class TrainStream:
  """Example n of the training stream -> (epoch, example index), and its random generator."""

  def __init__(self, num_examples: int, seed: int):
    if num_examples < 1:
      raise ValueError('The training split has no examples.')
    self.num_examples = num_examples
    self.seed = seed
    self._epoch, self._key = None, None

  def _epoch_key(self, epoch: int) -> int:
    if epoch != self._epoch:
      state = np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0]
      self._epoch, self._key = epoch, int(state)
    return self._key

  def index(self, epoch: int, position: int) -> int:
    """The example at `position` of `epoch`."""
    if self.num_examples == 1:
      return 0
    return grain.experimental.index_shuffle(
        position, max_index=self.num_examples - 1, seed=self._epoch_key(epoch),
        rounds=_SHUFFLE_ROUNDS)

  def locate(self, number: int) -> Tuple[int, int]:
    """(epoch, position) of example `number` of the stream."""
    return divmod(number, self.num_examples)

  def rng(self, epoch: int, index: int) -> np.random.Generator:
    """The generator of every random choice made for example `index` in `epoch`."""
    return np.random.default_rng([self.seed, epoch, index])


def process_rows(global_batch_size: int, sharding: Optional[jax.sharding.Sharding] = None,
                 process_index: Optional[int] = None,
                 process_count: Optional[int] = None) -> np.ndarray:
  """The rows of each global batch that this process builds, in the order it passes them.

  With a `sharding` of the batch dimension, these are the rows of the shards on this
  process's devices, in increasing order, as `jax.make_array_from_process_local_data`
  expects them. Without one, processes take equal contiguous blocks.
  """
  if sharding is not None:
    rows = set()
    for index in sharding.addressable_devices_indices_map((global_batch_size,)).values():
      rows.update(range(global_batch_size)[index[0]])
    return np.array(sorted(rows), np.int64)
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  if global_batch_size % process_count:
    raise ValueError(f'config.batch_size={global_batch_size} (global) does not split evenly '
                     f'over {process_count} processes.')
  local = global_batch_size // process_count
  return np.arange(process_index * local, (process_index + 1) * local, dtype=np.int64)
