"""Helpers for the training tests: a tiny image folder, a tiny config, reading results back."""
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image
import tensorflow as tf

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
  sys.path.insert(0, str(REPO))
from configs import default  # pylint: disable=g-import-not-at-top,wrong-import-position

CLASSES = ('a', 'b', 'c', 'd')
COMPILATION_CACHE_ENV = 'JAX_COMPILATION_CACHE_DIR'  # set for the whole test run, conftest.py


def write_folder(root: pathlib.Path, train_per_class: int, val_per_class: int) -> str:
  """root/{train,val}/<class>/*.png: 20x20 images, a class colour plus noise."""
  rng = np.random.default_rng(0)
  for split, count in (('train', train_per_class), ('val', val_per_class)):
    for c, name in enumerate(CLASSES):
      folder = root / split / name
      folder.mkdir(parents=True, exist_ok=True)
      for i in range(count):
        base = np.zeros((20, 20, 3)) + 60 * np.eye(3)[c % 3] * (1 + c // 3)
        pixels = np.clip(base + rng.normal(0, 40, base.shape) + 60, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f'{i:03d}.png')
  return str(root)


def tiny_config(data_dir: str, **overrides) -> ml_collections.ConfigDict:
  """The default recipe shrunk: a 4-block SMT at 16x16, batch 16, 40 steps (20 epochs).

  Tests share this exact config where they can: its programs are then compiled once.
  """
  config = default.get_config()
  config.model.embed_dims = (8, 16, 32, 64)
  config.model.depths = (1, 1, 1, 1)
  config.model.drop_path_rate = 0.0
  config.model.ops = 'xla'  # compiles several times faster than the CPU set
  config.dataset = 'folder'
  config.data_dir = data_dir
  config.image_size = 16
  config.batch_size = 16
  config.aug.randaugment_num_ops = 0
  config.aug.crop_scale = (0.5, 1.0)
  config.optim.warmup_epochs = 1.0
  config.optim.base_lr = 1e-2
  config.mesh.min_shard_size = 256
  config.num_train_steps = 40
  config.log_every_steps = 1
  config.eval_every_steps = 20
  config.checkpoint_every_steps = 8
  config.keep_checkpoints = 2
  return override(config, **overrides)


def override(config: ml_collections.ConfigDict, **fields) -> ml_collections.ConfigDict:
  """Sets dotted fields, e.g. override(config, **{'optim.base_lr': 0.1}); returns config."""
  for key, value in fields.items():
    target = config
    *parents, leaf = key.split('.')
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  return config


def write_config_file(config: ml_collections.ConfigDict, path: pathlib.Path) -> str:
  """A config file for `python -m smt_jax.main --config=PATH` holding exactly `config`."""
  path.write_text(
      'import json\nimport ml_collections\n\n\ndef get_config():\n'
      f'  return ml_collections.ConfigDict(json.loads({config.to_json()!r}))\n')
  return str(path)


def child_env(num_devices: int = 1, compilation_cache: bool = True) -> dict:
  """The environment of a child process: the tests' devices, options and (optionally) cache.

  Without `compilation_cache`, the child compiles everything itself. Processes of one
  multi-process run need that: with jax 0.12.1 on CPU, a training step read back from the
  persistent cache hangs in its first cross-process all-reduce (Gloo), and a resumed run
  finds the step its previous run wrote there.
  """
  env = dict(os.environ)
  if not compilation_cache:
    env.pop(COMPILATION_CACHE_ENV, None)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={num_devices}'
  env['JAX_DISABLE_MOST_OPTIMIZATIONS'] = '1'  # as the tests themselves, see conftest.py
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = os.pathsep.join([str(REPO), env.get('PYTHONPATH', '')])
  env['TF_CPP_MIN_LOG_LEVEL'] = '2'
  return env


def start_main(config_path: str, workdir: str, *args: str, num_devices: int = 1,
               log_path=None) -> subprocess.Popen:
  """`python -m smt_jax.main` in a child process."""
  log = open(log_path or os.path.join(workdir + '.log'), 'w')
  single_process = not any(a.startswith('--num_processes=') and a != '--num_processes=1'
                           for a in args)
  return subprocess.Popen(
      [sys.executable, '-m', 'smt_jax.main', f'--config={config_path}', f'--workdir={workdir}',
       *args], cwd=str(REPO), env=child_env(num_devices, compilation_cache=single_process),
      stdout=log, stderr=subprocess.STDOUT)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def scalars(workdir: str, tag: str) -> dict:
  """{step: value} of a scalar in the workdir's TensorBoard event files."""
  values = {}
  for name in sorted(tf.io.gfile.glob(os.path.join(workdir, 'events.out.tfevents.*'))):
    for record in tf.data.TFRecordDataset(name):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.tag == tag:
          values[event.step] = float(tf.make_ndarray(value.tensor))
  return values


def checkpoint_steps(workdir: str) -> list:
  root = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(root):
    return []
  return sorted(int(d) for d in os.listdir(root) if d.isdigit())


def restore_numpy(workdir: str, step: int) -> dict:
  """The TrainState saved at `step`, as a dict of numpy arrays (any device layout)."""
  path = os.path.join(workdir, 'checkpoints', str(step), 'state')
  with ocp.PyTreeCheckpointer() as ckptr:
    tree = ckptr.metadata(path).item_metadata.tree
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    return ckptr.restore(path, args=ocp.args.PyTreeRestore(restore_args=args))


def data_state(workdir: str, step: int) -> dict:
  with open(os.path.join(workdir, 'checkpoints', str(step), 'data', 'metadata')) as f:
    return json.load(f)


def assert_trees_equal(a, b):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))
