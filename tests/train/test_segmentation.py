"""Segmentation through the training loop: SMT + UPerNet on the generated seg_shapes dataset.

One reference run (8 steps, evaluations and checkpoints at 4 and 8) is shared: resuming
it from step 4, running it on 8 simulated devices, evaluating it from the command line.
The loss is checked against PyTorch's, the exact evaluation against one image at a time,
and the backbone initialization against the saved classifier.
"""
import io
import json
import shutil
import subprocess
import sys
import types

import flax
import jax
import numpy as np
from PIL import Image
import pytest
import tensorflow as tf
import torch

from configs import upernet_demo
from smt_jax import weights
from smt_jax.data import seg_augment
from smt_jax.data import seg_iterators
from smt_jax.data import shapes
from smt_jax.data import sources
from smt_jax.data.device_augment import normalize
from smt_jax.models import UPerNet, create_model, init_input
from smt_jax.tools import export
from smt_jax.train import seg_inference
from smt_jax.train import seg_metrics
from smt_jax.train import segmentation
from smt_jax.train import sharding
from smt_jax.train import train_and_evaluate
from smt_jax.train import validate
import train_helpers


def tiny_seg_config(data_dir: str, **overrides):
  """The demo recipe shrunk: a 4-block SMT, 16/8-channel heads, 32x32 crops, batch 8."""
  config = upernet_demo.get_config()
  config.data_dir = data_dir
  config.model.embed_dims = (8, 16, 32, 64)
  config.model.depths = (1, 1, 1, 1)
  config.model.ops = 'xla'
  config.head.channels = 16
  config.head.aux_channels = 8
  config.aug.img_scale = (64, 48)
  config.aug.crop_size = (32, 32)
  config.batch_size = 8
  config.eval_batch_size = 8
  config.mesh.min_shard_size = 256
  config.optim.warmup_steps = 2
  config.num_train_steps = 8
  config.log_every_steps = 1
  config.eval_every_steps = 4
  config.checkpoint_every_steps = 4
  config.keep_checkpoints = 2
  return train_helpers.override(config, **overrides)


@pytest.fixture(scope='module')
def shapes_dir(tmp_path_factory):
  return shapes.build(str(tmp_path_factory.mktemp('tfds')))


@pytest.fixture(scope='module')
def reference(shapes_dir, tmp_path_factory):
  config = tiny_seg_config(shapes_dir)
  workdir = str(tmp_path_factory.mktemp('seg_reference'))
  state, metrics = train_and_evaluate(config, workdir)
  return config, workdir, jax.device_get(state), metrics


def test_seg_shapes_is_read_through_the_random_access_source(shapes_dir):
  config = tiny_seg_config(shapes_dir)
  info = sources.dataset_info(config)
  assert (info.task, info.num_classes, info.num_train_examples, info.num_eval_examples) == (
      sources.SEGMENTATION, 4, 480, 48)
  source = sources.get_source(config)
  data, label_data = source.example('validation', 5)
  name = source.name('validation', 5)  # TFDS stores the examples in its own order
  image, label = shapes.scene('validation', int(name[len('validation_'):-len('.png')]))
  np.testing.assert_array_equal(seg_iterators.decode_label(label_data), label)
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), image)
  assert set(np.unique(label)) <= {0, 1, 2, 3, 255}


def test_loss_is_mmseg_cross_entropy_by_pytorch():
  """Bilinear upsampling (align_corners=False) and cross-entropy with ignore_index=255,
  averaged over all pixels, as mmseg 0.x computes them in PyTorch."""
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((2, 5, 7, 4)).astype(np.float32)
  labels = rng.integers(0, 4, (2, 19, 27)).astype(np.uint8)
  labels[:, :3] = 255
  ours = float(segmentation.pixel_cross_entropy(logits, labels))
  upsampled = torch.nn.functional.interpolate(
      torch.from_numpy(logits).permute(0, 3, 1, 2), size=(19, 27), mode='bilinear',
      align_corners=False)
  theirs = torch.nn.functional.cross_entropy(
      upsampled, torch.from_numpy(labels.astype(np.int64)), ignore_index=255,
      reduction='none').mean()
  np.testing.assert_allclose(ours, float(theirs), rtol=1e-5)


def test_training_runs_and_scores(reference):
  config, workdir, state, metrics = reference
  assert int(state.step) == 8
  assert set(metrics) == {'eval/mIoU', 'eval/mAcc', 'eval/aAcc', 'eval/num_examples'}
  assert metrics['eval/num_examples'] == 48
  assert 0 <= metrics['eval/mIoU'] <= 1 and 0 < metrics['eval/aAcc'] <= 1
  losses = train_helpers.scalars(workdir, 'train/loss')
  assert sorted(losses) == list(range(1, 9)) and all(np.isfinite(list(losses.values())))
  assert train_helpers.scalars(workdir, 'eval/mIoU')[8] == pytest.approx(metrics['eval/mIoU'])
  assert train_helpers.checkpoint_steps(workdir) == [4, 8]
  del config


def test_resume_continues_the_same_run(reference, tmp_path):
  config, workdir, state, _ = reference
  resumed_dir = tmp_path / 'resumed'
  shutil.copytree(workdir, resumed_dir)
  shutil.rmtree(resumed_dir / 'checkpoints' / '8')
  resumed, _ = train_and_evaluate(config, str(resumed_dir))
  resumed = jax.device_get(resumed)
  assert int(resumed.step) == 8
  # XLA:CPU's threaded kernels are not bitwise reproducible under load, and Adam turns
  # rounding noise in near-zero gradients into steps of up to +-lr: the tolerance of
  # test_resume.py.
  want, got = (np.concatenate([np.ravel(x) for x in jax.tree.leaves(s.params)])
               for s in (state, resumed))
  assert np.isclose(got, want, rtol=1e-4, atol=1e-6).mean() > 0.99
  np.testing.assert_allclose(got, want, atol=4 * config.optim.base_lr)
  losses = train_helpers.scalars(str(resumed_dir), 'train/loss')
  reference_losses = train_helpers.scalars(workdir, 'train/loss')
  np.testing.assert_allclose([losses[s] for s in range(5, 9)],
                             [reference_losses[s] for s in range(5, 9)], rtol=1e-4)


CHILD = '''
import json, sys
import jax
from smt_jax.train import train_and_evaluate
from test_segmentation import tiny_seg_config

config = tiny_seg_config(sys.argv[1], eval_every_steps=0)  # one evaluation, at the end
config.model.ops = 'cpu'  # as on CPU devices by default; see test_multidevice.py
train_and_evaluate(config, sys.argv[2])
print('RESULT ' + json.dumps({'devices': jax.device_count()}))
'''


def test_eight_devices_match_one_device(reference, tmp_path):
  config, workdir, _, metrics = reference
  env = train_helpers.child_env(num_devices=8)
  env['PYTHONPATH'] += ':' + str(train_helpers.REPO / 'tests' / 'train')
  out = subprocess.run([sys.executable, '-c', CHILD, config.data_dir, str(tmp_path)],
                       env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert json.loads(out.stdout.split('RESULT ')[-1])['devices'] == 8
  one = train_helpers.scalars(workdir, 'train/loss')
  eight = train_helpers.scalars(str(tmp_path), 'train/loss')
  np.testing.assert_allclose([eight[s] for s in sorted(one)], [one[s] for s in sorted(one)],
                             rtol=1e-4)
  np.testing.assert_allclose(train_helpers.scalars(str(tmp_path), 'eval/mIoU')[8],
                             metrics['eval/mIoU'], rtol=1e-4)


def test_eval_only_from_the_command_line(reference, tmp_path):
  config, workdir, _, metrics = reference
  config = tiny_seg_config(config.data_dir, eval_only=True)
  path = train_helpers.write_config_file(config, tmp_path / 'config.py')
  out = subprocess.run([sys.executable, '-m', 'smt_jax.main', f'--config={path}',
                        f'--workdir={workdir}'], cwd=str(train_helpers.REPO),
                       env=train_helpers.child_env(), capture_output=True, text=True,
                       timeout=600)
  assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
  assert (f"mIoU {metrics['eval/mIoU']:.4f}  mAcc {metrics['eval/mAcc']:.4f}  "
          f"aAcc {metrics['eval/aAcc']:.4f}  (48 images)") in out.stdout


def test_export_from_the_training_workdir(reference, tmp_path):
  """orbax: the trained variables and the segmenter's config; SavedModel: per-pixel class
  ids of uint8 images, those of JAX's whole-image inference."""
  config, workdir, state, _ = reference
  export.export(None, str(tmp_path / 'orbax'), 'orbax', config=config, workdir=workdir)
  model, variables = weights.load(str(tmp_path / 'orbax'), ops='xla')
  assert isinstance(model, UPerNet) and model.num_classes == 4
  train_helpers.assert_trees_equal(state.params, variables['params'])

  export.export(None, str(tmp_path / 'savedmodel'), 'savedmodel', (48, 64), config=config,
                workdir=workdir)
  images = np.stack([shapes.scene('validation', i)[0][::2, ::2] for i in range(3)])
  served = tf.saved_model.load(str(tmp_path / 'savedmodel')).signatures['serving_default'](
      images=tf.constant(images))['class_ids'].numpy()
  logits = seg_inference.whole_inference(
      lambda x: model.apply(variables, x)[0], normalize(images), (48, 64))
  assert served.shape == (3, 48, 64) and served.dtype == np.int32
  assert (served == np.argmax(logits, -1)).mean() > 0.999


def _initial_variables(config, workdir):
  """The segmentation task's initial variables for `config`, on the host."""
  task = segmentation.Segmentation(config, str(workdir))
  replicated = sharding.replicated(sharding.create_mesh(config.mesh))
  abstract = task.abstract_variables()
  return jax.device_get(task.initial_variables(types.SimpleNamespace(
      params=jax.tree.map(lambda _: replicated, abstract['params']),
      batch_stats=jax.tree.map(lambda _: replicated, abstract['batch_stats']))))


def test_backbone_starts_from_a_classifier_checkpoint(shapes_dir, tmp_path):
  config = tiny_seg_config(shapes_dir)
  classifier = create_model(config.model.name, **{
      **validate.model_overrides(config), 'num_classes': 10})
  trained = jax.device_get(classifier.init(jax.random.key(7), np.zeros((1, 32, 32, 3))))
  weights.save(str(tmp_path / 'classifier'), trained, classifier)

  config = tiny_seg_config(shapes_dir, init_from=str(tmp_path / 'classifier'))
  variables = _initial_variables(config, tmp_path / 'run')
  backbone = variables['params']['backbone']
  saved = {k: v for k, v in trained['params'].items() if k != 'head'}
  train_helpers.assert_trees_equal(saved, backbone)
  assert jax.tree.structure(saved) == jax.tree.structure(backbone)

  deeper = tiny_seg_config(shapes_dir, init_from=str(tmp_path / 'classifier'),
                           **{'model.depths': (1, 1, 2, 1)})
  with pytest.raises(ValueError, match=r'params/backbone/block3_1/.*checkpoint None'):
    train_and_evaluate(deeper, str(tmp_path / 'deeper'))


def test_heads_start_from_a_segmenter_checkpoint(reference, tmp_path):
  """init_from an export of the run: evaluation-only gives the run's final scores. From a
  segmenter of 5 classes, everything but the two classifiers is taken; those start fresh."""
  config, workdir, _, metrics = reference
  export.export(None, str(tmp_path / 'segmenter'), 'orbax', config=config, workdir=workdir)
  scoring = tiny_seg_config(config.data_dir, eval_only=True,
                            init_from=str(tmp_path / 'segmenter'))
  _, scores = train_and_evaluate(scoring, str(tmp_path / 'eval'))
  assert scores == pytest.approx(metrics, rel=1e-6)

  task = segmentation.Segmentation(config, str(tmp_path / 'run'))
  five = task.model.clone(num_classes=5)
  saved = jax.device_get(five.init(jax.random.key(7), init_input(five), train=False))
  weights.save(str(tmp_path / 'five'), saved, five)
  fresh = flax.traverse_util.flatten_dict(_initial_variables(config, tmp_path / 'run'))
  variables = flax.traverse_util.flatten_dict(_initial_variables(
      tiny_seg_config(config.data_dir, init_from=str(tmp_path / 'five')), tmp_path / 'run'))
  saved = flax.traverse_util.flatten_dict(saved)
  classifiers = [name for name in fresh if 'conv_seg' in name]
  assert len(classifiers) == 4  # kernel and bias of decode_head and auxiliary_head
  train_helpers.assert_trees_equal(
      {name: fresh[name] if name in classifiers else saved[name] for name in fresh}, variables)


@pytest.mark.parametrize('mode', ['whole', 'slide'])
def test_evaluation_equals_one_image_at_a_time(mode, tmp_path):
  """Two images of different sizes in batches of 4: two programs, padded rows; the totals
  equal those of each image alone, and each example is scored once. 'slide': overlapping
  32x32 windows."""
  from data import test_ade20k  # pylint: disable=import-outside-toplevel
  manual = tmp_path / 'manual'
  manual.mkdir()
  test_ade20k.write_zip(manual / 'ADEChallengeData2016.zip')
  subprocess.run([sys.executable, '-m', 'smt_jax.tools.build_ade20k', f'--manual_dir={manual}',
                  f'--data_dir={tmp_path / "tfds"}'], check=True, env=train_helpers.child_env(),
                 cwd=str(train_helpers.REPO), capture_output=True)
  config = tiny_seg_config(str(tmp_path / 'tfds'), dataset='ade20k', eval_batch_size=4,
                           **{'eval.mode': mode, 'eval.crop': (32, 32),
                              'eval.stride': (21, 21)})
  task = segmentation.Segmentation(config, str(tmp_path))
  mesh = sharding.create_mesh(config.mesh)
  variables = jax.jit(task._init_fn(3))()  # pylint: disable=protected-access
  params, stats = variables['params'], variables['batch_stats']
  state_sh = jax.tree.map(lambda _: sharding.replicated(mesh), variables)
  evaluate = task.evaluator(types.SimpleNamespace(**state_sh), sharding.batch_sharding(mesh),
                            mesh)
  metrics = evaluate(params, stats)

  source = sources.get_source(config)
  totals = None
  for index in range(task.info.num_eval_examples):
    image, label = seg_iterators._decode_pair(  # pylint: disable=protected-access
        *source.example('validation', index))
    image, label = seg_augment.eval_example(image, label, config.aug)
    logits = task.inference(params, stats, image[None], label.shape)
    totals = seg_metrics.accumulate(totals, seg_metrics.area_counts(
        np.argmax(logits, -1), label[None], task.info.num_classes))
  want = seg_metrics.summarize(totals)
  for name in ('mIoU', 'mAcc', 'aAcc'):
    assert metrics[f'eval/{name}'] == pytest.approx(want[name], rel=1e-6)
  plan = seg_iterators.SegEvalIterator(config, batch_size=4).plan
  indices = np.concatenate([rows for _, rows in plan])
  assert sorted(indices[indices >= 0]) == list(range(task.info.num_eval_examples))
  assert len({key for key, _ in plan}) == 2


def test_a_classification_dataset_is_refused(tmp_path):
  root = train_helpers.write_folder(tmp_path / 'folder', 2, 1)
  config = tiny_seg_config(root, dataset='folder')
  with pytest.raises(validate.ConfigError, match="config.dataset='folder'.*'segmentation'"):
    train_and_evaluate(config, str(tmp_path / 'run'))
