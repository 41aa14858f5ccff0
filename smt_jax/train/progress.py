"""The lines a training run prints: what runs where, then step, loss, lr, speed, ETA and evals.

Printed (stdout, process 0 only) rather than logged, so that they reach a terminal or a
notebook while library logs go to a file (see smt_jax.main). Speed and ETA come from the
time between two log steps, from the second one on: the first interval includes
compilation, so its line gives that time instead. TensorBoard gets the same values from
the metric writer.
"""
import time
from typing import Dict, Optional

import jax


def _duration(seconds: float) -> str:
  minutes, secs = divmod(int(round(seconds)), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}:{minutes:02d}:{secs:02d}' if hours else f'{minutes}:{secs:02d}'


def _segmentation_scores(metrics: Dict[str, float], prefix: str = 'eval') -> str:
  return '  '.join(f'{name} {metrics[f"{prefix}/{name}"]:.4f}'
                   for name in ('mIoU', 'mAcc', 'aAcc'))


def result_line(metrics: Dict[str, float]) -> str:
  """The scores of an evaluation in one line, as `main` prints them after eval_only."""
  images = f'({int(metrics.get("eval/num_examples", 0)):,} images)'
  if 'eval/mIoU' in metrics:
    return f'{_segmentation_scores(metrics)}  {images}'
  return (f"top-1 {metrics.get('eval/top1', float('nan')):.4f}  "
          f"top-5 {metrics.get('eval/top5', float('nan')):.4f}  {images}")


class Progress:
  """Prints a start line, one line per `train` call, eval results and a final line."""

  def __init__(self, total_steps: int, batch_size: int):
    self.total_steps = total_steps
    self.batch_size = batch_size
    self.enabled = jax.process_index() == 0
    self._began = self._since = time.monotonic()
    self._since_step = 0
    self._compiled = False

  def _print(self, line: str) -> None:
    if self.enabled:
      print(line, flush=True)

  def start(self, step: int, model: str, num_params: int, num_train: int,
            num_eval: Optional[int], workdir: str) -> None:
    devices = jax.devices()
    processes = f' in {jax.process_count()} processes' if jax.process_count() > 1 else ''
    eval_part = f', {num_eval:,} eval' if num_eval is not None else ', no eval split'
    resumed = f', resuming at step {step}' if step else ''
    self._print(f'{model}, {num_params:,} parameters | {len(devices)} {devices[0].platform} '
                f'device(s){processes} | {num_train:,} train images{eval_part} | '
                f'{self.total_steps:,} steps{resumed} | workdir {workdir}')
    self._began = self._since = time.monotonic()
    self._since_step = step
    self._compiled = False

  def train(self, step: int, loss: float, lr: float) -> None:
    now = time.monotonic()
    per_step = max(now - self._since, 1e-9) / max(step - self._since_step, 1)
    if self._compiled:
      speed = (f'{self.batch_size / per_step:,.1f} images/s  '
               f'ETA {_duration(per_step * (self.total_steps - step))}')
    else:
      speed = f'compiled and ran in {_duration(now - self._since)}'
    width = len(str(self.total_steps))
    self._print(f'step {step:>{width}}/{self.total_steps}  loss {loss:.4f}  lr {lr:.3e}  '
                + speed)
    self._since, self._since_step, self._compiled = now, step, True

  def eval(self, step: int, metrics: Dict[str, float]) -> None:
    parts = []
    for prefix in ('eval', 'eval_ema'):
      if f'{prefix}/top1' in metrics:
        parts.append(f'{prefix.replace("_", " ")} top-1 {metrics[f"{prefix}/top1"]:.4f}  '
                     f'top-5 {metrics[f"{prefix}/top5"]:.4f}  loss {metrics[f"{prefix}/loss"]:.4f}')
      elif f'{prefix}/mIoU' in metrics:
        parts.append(f'{prefix.replace("_", " ")} ' + _segmentation_scores(metrics, prefix))
    if parts:
      self._print(f'step {step}: ' + ' | '.join(parts) +
                  f'  ({int(metrics["eval/num_examples"]):,} images)')
    # The next speed figure measures training only.
    self._since, self._since_step = time.monotonic(), step

  def finish(self, step: int, checkpoints: str) -> None:
    self._print(f'done at step {step} in {_duration(time.monotonic() - self._began)}; '
                f'checkpoints in {checkpoints}')
