"""Exports for serving: an inference-only orbax checkpoint and a TensorFlow SavedModel."""
import json
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from testvectors import Vector
from smt_jax import weights
from smt_jax.tools import export
from smt_jax.convert import torch_to_flax
from smt_jax.models import SMT

REPO = pathlib.Path(__file__).resolve().parents[2]
IMAGE_SIZE = 64

# Runs in a fresh interpreter that imports TensorFlow and nothing of JAX or smt_jax.
_SERVE_WITH_TF_ONLY = '''
import json, sys
import numpy as np
import tensorflow as tf
model = tf.saved_model.load(sys.argv[1])
serve = model.signatures['serving_default']
logits = [serve(images=tf.constant(np.load(path)))['logits'].numpy().tolist()
          for path in sys.argv[2:]]
assert 'smt_jax' not in sys.modules and 'flax' not in sys.modules
print(json.dumps(logits))
'''


@pytest.fixture(name='checkpoint', scope='module')
def checkpoint_fixture(tmp_path_factory):
  vector = Vector('smt_micro_b')
  model = SMT(**vector.fields)
  path = tmp_path_factory.mktemp('weights') / 'w'
  weights.save(str(path), torch_to_flax(vector.state_dict, model), model)
  return path


def _images(batch):
  return np.random.default_rng(batch).integers(0, 256, (batch, IMAGE_SIZE, IMAGE_SIZE, 3),
                                               dtype=np.uint8)


def test_savedmodel_serves_the_same_logits_with_tensorflow_alone(checkpoint, tmp_path):
  out = tmp_path / 'savedmodel'
  result = subprocess.run(
      [sys.executable, '-m', 'smt_jax.tools.export', f'--checkpoint={checkpoint}',
       f'--output_dir={out}', '--format=savedmodel', f'--image_size={IMAGE_SIZE}'],
      cwd=REPO, capture_output=True, text=True, check=False)
  assert result.returncode == 0, result.stderr
  model, variables = weights.load(str(checkpoint))
  batches = (1, 3)  # the batch dimension is dynamic
  paths = [str(tmp_path / f'images{batch}.npy') for batch in batches]
  for batch, path in zip(batches, paths):
    np.save(path, _images(batch))
  served = subprocess.run([sys.executable, '-c', _SERVE_WITH_TF_ONLY, str(out), *paths],
                          capture_output=True, text=True, check=False)
  assert served.returncode == 0, served.stderr
  served = json.loads(served.stdout.strip().splitlines()[-1])
  for batch, logits in zip(batches, served):
    expected = jax.jit(export.serving_fn(model))(variables, _images(batch))['logits']
    assert np.shape(logits) == (batch, 7)
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)


def test_orbax_export_restores_into_a_fresh_model(checkpoint, tmp_path):
  export.export(str(checkpoint), str(tmp_path / 'inference'), 'orbax')
  model, variables = weights.load(str(checkpoint))
  fresh_model, restored = weights.load(str(tmp_path / 'inference'))
  assert fresh_model == model
  images = _images(2).astype(np.float32) / 255
  np.testing.assert_array_equal(jax.jit(fresh_model.apply)(restored, images),
                                jax.jit(model.apply)(variables, images))


def test_export_refuses_to_overwrite(checkpoint, tmp_path):
  with pytest.raises(FileExistsError, match='choose a new output directory'):
    export.export(str(checkpoint), str(tmp_path), 'orbax')
