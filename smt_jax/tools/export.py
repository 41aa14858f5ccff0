"""Export a trained or converted SMT for serving.

    python -m smt_jax.tools.export --checkpoint=DIR --output_dir=OUT --format=orbax|savedmodel

- orbax: an inference-only weights checkpoint (variables + model config, no optimizer
  state) that `smt_jax.weights.load` restores without the training code.
- savedmodel: a TensorFlow SavedModel made with jax2tf. Its `serving_default` signature
  takes uint8 images [batch, H, W, 3] (H = W = --image_size), normalizes them inside,
  and returns logits; TensorFlow Serving or plain TensorFlow can run it without JAX.
"""
import os
import sys
from typing import Any, Dict

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from smt_jax import weights
from smt_jax.data import device_augment
from smt_jax.models import SMT

FLAGS = flags.FLAGS


def serving_fn(model: SMT):
  """(variables, uint8 NHWC images) -> float32 logits, normalization included."""
  def serve(variables, images):
    return model.apply(variables, device_augment.normalize(images)).astype(jnp.float32)
  return serve


def export_savedmodel(model: SMT, variables: Dict[str, Any], output_dir: str,
                      image_size: int) -> None:
  """Writes a SavedModel whose batch dimension is dynamic and whose weights are variables."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top

  module = tf.Module()
  module.variables_tree = tf.nest.map_structure(
      tf.Variable, jax.tree.map(np.asarray, jax.device_get(dict(variables))))
  converted = jax2tf.convert(serving_fn(model), with_gradient=False,
                             polymorphic_shapes=[None, '(b, _, _, _)'])
  signature = tf.TensorSpec([None, image_size, image_size, 3], tf.uint8, name='images')
  module.serve = tf.function(lambda images: {'logits': converted(module.variables_tree,
                                                                 images)},
                             input_signature=[signature], autograph=False)
  tf.saved_model.save(module, output_dir, signatures={'serving_default': module.serve})


def export(checkpoint: str, output_dir: str, fmt: str, image_size: int = 224) -> None:
  if os.path.exists(output_dir):
    raise FileExistsError(f'--output_dir={output_dir} exists; choose a new output directory.')
  model, variables = weights.load(weights.check_weights_dir(checkpoint, '--checkpoint'))
  if fmt == 'orbax':
    weights.save(output_dir, variables, model)
  elif fmt == 'savedmodel':
    export_savedmodel(model, variables, output_dir, image_size)
  else:
    raise ValueError(f"format must be 'orbax' or 'savedmodel', got {fmt!r}")


def main(argv):
  del argv
  try:
    export(FLAGS.checkpoint, FLAGS.output_dir, FLAGS.format, FLAGS.image_size)
  except (weights.WeightsError, FileExistsError) as e:
    sys.exit(f'error: {e}')  # the message says what to fix; a traceback would bury it
  print(f'Wrote {FLAGS.format} export to {os.path.abspath(FLAGS.output_dir)}')


def _define_flags():
  """Flags live here, not at import, so importing this module defines no flags."""
  flags.DEFINE_string('checkpoint', None, 'A weights checkpoint (from smt_jax.convert, '
                      'smt_jax.weights.save or an orbax export).')
  flags.DEFINE_string('output_dir', None, 'Where to write the export (must be new).')
  flags.DEFINE_enum('format', 'orbax', ['orbax', 'savedmodel'], 'What to write.')
  flags.DEFINE_integer('image_size', 224, 'Serving image size (savedmodel).')
  flags.mark_flags_as_required(['checkpoint', 'output_dir'])


if __name__ == '__main__':
  _define_flags()
  app.run(main)
