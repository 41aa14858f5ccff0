"""Semantic segmentation (`config.task = 'segmentation'`): SMT + UPerNet as the official
segmentation configs train it (mmseg 0.x `EncoderDecoder`), in the same loop, mesh,
checkpoints and input stream as classification.

Training: 512x512 crops (`seg_iterators.SegmentationExample`), normalized on the device;
both heads' logits upsampled (bilinear, align_corners=False) to the crop and scored by
per-pixel cross-entropy, label 255 ignored, summed over the kept pixels and divided by all
pixels (mmseg 0.x `CrossEntropyLoss`, avg_non_ignore=False), the auxiliary head weighted by
`config.loss.aux_weight`. The optimizer is `optim.create_poly_optimizer`.

Evaluation: every validation image at its test size, alone in the sense that no padding
reaches the network (`seg_iterators.SegEvalIterator` batches images of one size), logits
resized to the original size (`seg_inference`, whole image or sliding windows by
`config.eval.mode`), and per-class areas summed exactly over the split on all processes
(`seg_metrics`): eval/mIoU, eval/mAcc, eval/aAcc.

Initialization: `config.init_from` is a pretrained release name or a weights directory. An
SMT classifier's fills the backbone (its classifier head is not used; the heads start fresh);
a segmenter's (an export of this task) fills backbone and heads, with new classifiers if the
number of classes differs.
"""
import os
from typing import Callable, Dict, Optional, Tuple

from absl import logging
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from smt_jax import data
from smt_jax.data import seg_iterators
from smt_jax.data import shapes
from smt_jax.data import sources
from smt_jax.data.device_augment import normalize
from smt_jax.models import UPerNet, abstract_variables, create_model, init_input
from smt_jax.models.upernet import resize
from smt_jax.train import init as init_lib
from smt_jax.train import optim
from smt_jax.train import seg_inference
from smt_jax.train import seg_metrics
from smt_jax.train import sharding
from smt_jax.train import train_step as train_step_lib
from smt_jax.train import validate
from smt_jax.train import xla_options

IGNORE_INDEX = 255


def pixel_cross_entropy(logits: jax.Array, labels: jax.Array,
                        ignore_index: int = IGNORE_INDEX) -> jax.Array:
  """mmseg 0.x's loss on logits [B, h, w, C] at any stride and labels [B, H, W]: logits
  resized to the labels (bilinear), cross-entropy summed over non-ignored pixels, divided by
  all B * H * W pixels."""
  logits = resize(logits.astype(jnp.float32), labels.shape[1:3])
  labels = labels.astype(jnp.int32)
  kept = labels != ignore_index
  log_p = jax.nn.log_softmax(logits)
  nll = -jnp.take_along_axis(log_p, jnp.where(kept, labels, 0)[..., None], -1)[..., 0]
  return jnp.sum(jnp.where(kept, nll, 0.0)) / labels.size


def make_criterion(loss: ml_collections.ConfigDict):
  """criterion((logits, aux_logits), labels) -> decode_weight * CE + aux_weight * CE."""
  def criterion(outputs, labels):
    logits, aux_logits = outputs
    return (loss.decode_weight * pixel_cross_entropy(logits, labels)
            + loss.aux_weight * pixel_cross_entropy(aux_logits, labels))
  return criterion


def _prepare(dtype):
  def prepare(rng, batch):
    del rng  # the host transforms did all the random work
    return normalize(batch['image'], dtype), batch['label']
  return prepare


def _resolve_dataset(config: ml_collections.ConfigDict, workdir: str) -> ml_collections.ConfigDict:
  """Builds the demo's generated dataset (seg_shapes) on first use, in data_dir or WORKDIR/data."""
  if config.dataset != shapes.NAME:
    return config
  config = ml_collections.ConfigDict(config.to_dict())
  config.data_dir = shapes.build(config.data_dir or os.path.join(workdir, 'data'))
  return config


def from_checkpoint(loaded: Dict, fresh: Dict, source: str) -> Dict:
  """`fresh` UPerNet variables filled from `loaded`.

  From a segmenter (UPerNet variables), everything is taken; its classifiers (`conv_seg`)
  stay fresh when the number of classes differs. From an SMT classifier, the backbone is
  taken and the heads stay fresh. Raises ValueError naming every missing or misfit array.
  """
  fresh_flat = flax.traverse_util.flatten_dict(fresh, sep='/')
  loaded_flat = flax.traverse_util.flatten_dict(loaded, sep='/')
  targets = fresh_flat
  if not any(name.split('/')[1] == 'backbone' for name in loaded_flat):  # a classifier's
    loaded_flat = {'/backbone/'.join(name.split('/', 1)): value
                   for name, value in loaded_flat.items()}
    targets = {name: value for name, value in fresh_flat.items()
               if name.split('/')[1] == 'backbone'}
  filled, reset = init_lib.fill(
      targets, loaded_flat, source, 'the segmenter of config.model and config.head',
      lambda name, other: other is not None and '/conv_seg/' in name)
  if reset:
    logging.info('init_from: classifiers re-initialized (%s): the number of classes differs.',
                 ', '.join(reset))
  return flax.traverse_util.unflatten_dict({**fresh_flat, **filled}, sep='/')


class Segmentation:
  """UPerNet on an SMT backbone, the official ADE20K recipe (configs/upernet_smt_s_ade20k.py)."""

  best_metric = 'eval/mIoU'
  use_ema = False

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config = _resolve_dataset(config, workdir)
    self.info = data.dataset_info(config)
    if self.info.task != sources.SEGMENTATION:
      raise validate.ConfigError(
          f"config.dataset={config.dataset!r} has class labels, not label maps; "
          "config.task='segmentation' needs a dataset with a 'segmentation' feature "
          "(e.g. 'ade20k').")
    if config.eval.mode not in ('whole', 'slide'):
      raise validate.ConfigError(f"config.eval.mode={config.eval.mode!r}: choose 'whole' "
                                 "(the official configs) or 'slide'.")
    backbone = create_model(config.model.name, **{**validate.model_overrides(config),
                                                  'num_classes': 0})
    self.model = UPerNet(backbone, self.info.num_classes, channels=config.head.channels,
                         aux_channels=config.head.aux_channels, dropout=config.head.dropout)

  def _init_fn(self, seed: int):
    images = init_input(self.model)
    return lambda: self.model.init(jax.random.key(seed, impl='rbg'), images, train=False)

  def abstract_variables(self):
    return abstract_variables(self.model)

  def optimizer(self, params, steps_per_epoch: int, total_steps: int
                ) -> Tuple[optax.GradientTransformation, optax.Schedule]:
    del params, steps_per_epoch
    return optim.create_poly_optimizer(self.config.optim, total_steps)

  def initial_variables(self, state_shardings):
    variables = init_lib.fresh_variables(self._init_fn(self.config.seed))
    if self.config.init_from:
      variables = from_checkpoint(init_lib.load_weights(self.config.init_from), variables,
                                  self.config.init_from)
    variables.setdefault('batch_stats', {})
    return init_lib.place(variables, {'params': state_shardings.params,
                                      'batch_stats': state_shardings.batch_stats})

  def train_iterator(self, start_step: int, batch_sharding) -> data.TrainIterator:
    return data.TrainIterator(self.config, start_step=start_step, sharding=batch_sharding,
                              make_example=seg_iterators.SegmentationExample(self.config.aug))

  def train_step(self, tx: optax.GradientTransformation):
    config = self.config
    return train_step_lib.make_train_step(
        self.model, tx, _prepare(self.model.backbone.dtype), config.seed,
        config.optim.grad_accum_steps, criterion=make_criterion(config.loss))

  def inference(self, params, batch_stats, images: jax.Array,
                out_size: Tuple[int, int]) -> jax.Array:
    """Logits [B, *out_size, C] of uint8 images [B, h, w, 3] (config.eval.mode)."""
    variables = {'params': params, 'batch_stats': batch_stats}
    logits_fn = lambda x: self.model.apply(variables, x)[0]
    images = normalize(images, self.model.backbone.dtype)
    if self.config.eval.mode == 'slide':
      return seg_inference.slide_inference(logits_fn, images, out_size,
                                           tuple(self.config.eval.crop),
                                           tuple(self.config.eval.stride))
    return seg_inference.whole_inference(logits_fn, images, out_size)

  def evaluator(self, state_shardings, batch_sharding, mesh
                ) -> Optional[Callable[..., Dict[str, float]]]:
    """evaluate(params, batch_stats) -> {'eval/mIoU', ...} over the split; None without one."""
    if self.info.eval_split is None:
      return None
    eval_iter = seg_iterators.SegEvalIterator(
        self.config, sharding=batch_sharding,
        batch_size=self.config.eval_batch_size or jax.device_count())
    num_classes = self.info.num_classes

    def counts(params, batch_stats, batch):
      logits = self.inference(params, batch_stats, batch['image'], batch['label'].shape[1:3])
      return seg_metrics.area_counts(jnp.argmax(logits, -1), batch['label'], num_classes,
                                     valid=batch['mask'][:, None, None])

    step = jax.jit(counts, in_shardings=(state_shardings.params, state_shardings.batch_stats,
                                         batch_sharding),
                   out_shardings=sharding.replicated(mesh),
                   compiler_options=xla_options.compiler_options())

    def evaluate(params, batch_stats) -> Dict[str, float]:
      totals = None
      for batch in eval_iter:
        totals = seg_metrics.accumulate(totals, step(params, batch_stats, batch))
      scores = seg_metrics.summarize(totals)
      return {'eval/mIoU': scores['mIoU'], 'eval/mAcc': scores['mAcc'],
              'eval/aAcc': scores['aAcc'],
              'eval/num_examples': float(self.info.num_eval_examples)}

    return evaluate
