"""Reading back the scalars the training loop wrote (for notebooks and reports)."""
from typing import Dict, List, Tuple

import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator


def read_scalars(workdir: str) -> Dict[str, List[Tuple[int, float]]]:
  """{tag: [(step, value), ...]} from the TensorBoard event files in `workdir`."""
  events = event_accumulator.EventAccumulator(
      workdir, size_guidance={event_accumulator.TENSORS: 0, event_accumulator.SCALARS: 0})
  events.Reload()
  scalars = {tag: [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events.Tensors(tag)]
             for tag in events.Tags()['tensors']}
  scalars.update({tag: [(e.step, e.value) for e in events.Scalars(tag)]
                  for tag in events.Tags()['scalars']})
  return scalars
