"""Export a trained or converted SMT classifier or segmenter for serving.

    python -m smt_jax.tools.export --checkpoint=WEIGHTS_DIR --output_dir=OUT \
        --format=orbax|savedmodel
    python -m smt_jax.tools.export --config=configs/RECIPE.py --workdir=TRAINING_WORKDIR \
        --output_dir=OUT --format=orbax|savedmodel [--ema]

The model comes from a weights checkpoint (converted official weights, or an earlier
export), or from the newest checkpoint of a training workdir with the run's config (with
--ema, the moving average of its parameters).
- orbax: an inference-only weights checkpoint (variables + model config, no optimizer
  state) that `smt_jax.weights.load` restores without the training code.
- savedmodel: a TensorFlow SavedModel made with jax2tf. Its `serving_default` signature
  takes uint8 images [batch, H, W, 3] (H = --image_size, W = --image_width, by default
  H), normalizes them inside, and returns a classifier's `logits` [batch, classes], or a
  segmenter's per-pixel `class_ids` int32 [batch, H, W] (whole-image inference, logits
  resized to the image); TensorFlow Serving or plain TensorFlow runs it without JAX.
"""
import contextlib
import os
import sys
from typing import Any, Dict, Optional, Tuple, Union

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from smt_jax import weights
from smt_jax.data import device_augment
from smt_jax.models import UPerNet
from smt_jax.train import checkpointing
from smt_jax.train import loop
from smt_jax.train import seg_inference

FLAGS = flags.FLAGS


def serving_fn(model: weights.Model):
  """(variables, uint8 NHWC images) -> {'logits'} of a classifier or {'class_ids'} of a
  segmenter, normalization included."""
  def serve(variables, images):
    x = device_augment.normalize(images)
    if isinstance(model, UPerNet):
      logits = seg_inference.whole_inference(lambda y: model.apply(variables, y)[0], x,
                                             images.shape[1:3])
      return {'class_ids': jnp.argmax(logits, -1).astype(jnp.int32)}
    return {'logits': model.apply(variables, x).astype(jnp.float32)}
  return serve


@contextlib.contextmanager
def _stablehlo_that_tensorflow_reads():
  """Makes jax2tf write StableHLO that TensorFlow's XlaCallModule can load and run.

  XlaCallModule reads the module with the StableHLO built into TensorFlow, which lags jax's:
  - jax serializes for consumers a few weeks older than itself (jax 0.12.1: StableHLO 1.19
    even for twelve weeks), and writes the shape assertions of the dynamic batch as
    `vhlo.custom_call_v2`, which TensorFlow 2.21 (StableHLO 1.13.7) cannot deserialize.
    The module is written for the StableHLO version of the TensorFlow installed, the one
    that will read it (or jax's own, if older).
  - jax 0.12 keeps `chlo.erfc` (exact GELU) as a StableHLO composite, whose decomposition
    TensorFlow 2.21 cannot refine to the batch it is called with. Lowering erfc to jax's own
    elementwise formula, as jax does for its highest accuracy, writes plain StableHLO ops.
  jax offers no option for either, hence the swaps for the export's duration.
  """
  from jax._src.export import _export  # pylint: disable=g-import-not-at-top
  from jax._src.interpreters import mlir as jax_mlir  # pylint: disable=g-import-not-at-top
  from jax._src.lax import special  # pylint: disable=g-import-not-at-top
  from jax._src.lib.mlir.dialects import hlo  # pylint: disable=g-import-not-at-top
  from jax.extend import backend, mlir  # pylint: disable=g-import-not-at-top
  from tensorflow.compiler.mlir.stablehlo import stablehlo as tf_stablehlo  # pylint: disable=g-import-not-at-top
  try:
    from jax._src.lax.erf import erfc_impl  # pylint: disable=g-import-not-at-top
  except ImportError:  # older jax: its serializer expands chlo.erfc itself
    erfc_impl = None

  target = tf_stablehlo.get_smaller_version(tf_stablehlo.get_current_version(),
                                            hlo.get_current_version())
  def to_bytecode(module):
    return mlir.serialize_portable_artifact(module, target,
                                            backend.get_backend().serialize_with_sdy)
  def lower_erfc(ctx, x, **unused_params):
    return jax_mlir.lower_fun(erfc_impl, multiple_results=False)(ctx, x)

  # pylint: disable=protected-access
  default_bytecode, default_erfc = _export._module_to_bytecode, jax_mlir._lowerings[special.erfc_p]
  _export._module_to_bytecode = to_bytecode
  if erfc_impl is not None:
    jax_mlir.register_lowering(special.erfc_p, lower_erfc)
  try:
    yield
  finally:
    _export._module_to_bytecode = default_bytecode
    jax_mlir._lowerings[special.erfc_p] = default_erfc
  # pylint: enable=protected-access


def export_savedmodel(model: weights.Model, variables: Dict[str, Any], output_dir: str,
                      image_size: Tuple[int, int]) -> None:
  """Writes a SavedModel whose batch dimension is dynamic and whose weights are variables."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top

  module = tf.Module()
  module.variables_tree = tf.nest.map_structure(
      tf.Variable, jax.tree.map(np.asarray, jax.device_get(dict(variables))))
  converted = jax2tf.convert(serving_fn(model), with_gradient=False,
                             polymorphic_shapes=[None, '(b, _, _, _)'])
  signature = tf.TensorSpec([None, *image_size, 3], tf.uint8, name='images')
  module.serve = tf.function(lambda images: converted(module.variables_tree, images),
                             input_signature=[signature], autograph=False)
  with _stablehlo_that_tensorflow_reads():  # jax2tf serializes when TensorFlow traces
    tf.saved_model.save(module, output_dir, signatures={'serving_default': module.serve})


def from_workdir(config, workdir: str,
                 ema: bool = False) -> Tuple[weights.Model, Dict[str, Any]]:
  """(model, {'params', 'batch_stats'}) of the newest checkpoint of a training workdir;
  with `ema`, the exponential moving average of the parameters stands for the parameters."""
  task, state = loop.restore_latest(config, workdir)
  if ema and state.ema_params is None:
    raise ValueError(f'--ema: the run in {workdir} kept no moving average of its parameters '
                     '(its config.optim.ema_decay is None); export without --ema.')
  variables = {'params': state.ema_params if ema else state.params,
               'batch_stats': state.batch_stats}
  return task.model, jax.device_get(variables)


def export(checkpoint: Optional[str], output_dir: str, fmt: str,
           image_size: Union[int, Tuple[int, int]] = 224, config=None,
           workdir: Optional[str] = None, ema: bool = False) -> None:
  """Writes `fmt` to `output_dir` from a weights `checkpoint`, or from a training
  `workdir` and its `config` (with `ema`: its moving average of the parameters)."""
  if os.path.exists(output_dir):
    raise FileExistsError(f'--output_dir={output_dir} exists; choose a new output directory.')
  if (checkpoint is None) == (workdir is None):
    raise ValueError('Give either --checkpoint (a weights directory) or --workdir and '
                     '--config (a training run).')
  if workdir is not None:
    if config is None:
      raise ValueError('--workdir needs the --config the run was trained with.')
    model, variables = from_workdir(config, workdir, ema)
  else:
    if ema:
      raise ValueError('--ema needs --workdir: a weights directory holds one set of '
                       'parameters.')
    model, variables = weights.load(weights.check_weights_dir(checkpoint, '--checkpoint'))
  if isinstance(image_size, int):
    image_size = (image_size, image_size)
  if fmt == 'orbax':
    weights.save(output_dir, variables, model)
  elif fmt == 'savedmodel':
    export_savedmodel(model, variables, output_dir, image_size)
  else:
    raise ValueError(f"format must be 'orbax' or 'savedmodel', got {fmt!r}")


def main(argv):
  del argv
  try:
    export(FLAGS.checkpoint, FLAGS.output_dir, FLAGS.format,
           (FLAGS.image_size, FLAGS.image_width or FLAGS.image_size), FLAGS.config,
           FLAGS.workdir, FLAGS.ema)
  except (weights.WeightsError, checkpointing.CheckpointError, FileExistsError,
          ValueError) as e:
    sys.exit(f'error: {e}')  # the message says what to fix; a traceback would bury it
  print(f'Wrote {FLAGS.format} export to {os.path.abspath(FLAGS.output_dir)}')


def _define_flags():
  """Flags live here, not at import, so importing this module defines no flags."""
  flags.DEFINE_string('checkpoint', None, 'A weights checkpoint (from smt_jax.convert, '
                      'smt_jax.weights.save or an orbax export).')
  flags.DEFINE_string('workdir', None, 'A training workdir, instead of --checkpoint: its '
                      'newest checkpoint is exported.')
  config_flags.DEFINE_config_file('config', None, 'The recipe the --workdir run used.')
  flags.DEFINE_bool('ema', False, 'With --workdir: export the moving average of the '
                    'parameters (runs with config.optim.ema_decay), as eval_ema/ scored it.')
  flags.DEFINE_string('output_dir', None, 'Where to write the export (must be new).')
  flags.DEFINE_enum('format', 'orbax', ['orbax', 'savedmodel'], 'What to write.')
  flags.DEFINE_integer('image_size', 224, 'Serving image height (savedmodel).')
  flags.DEFINE_integer('image_width', None, 'Serving image width (savedmodel); default: '
                       '--image_size.')
  flags.mark_flags_as_required(['output_dir'])


if __name__ == '__main__':
  _define_flags()
  app.run(main)
