"""Every notebook runs top to bottom, offline, with small settings injected as parameters.

The inference notebooks keep their default, a release name: its file comes from a local
server standing in for the release page (the `release_server` fixture).
"""
import pathlib

import jax
import nbclient
import nbformat
import numpy as np
import pytest

from smt_jax import weights
from smt_jax.labels import imagenet_class_names
from smt_jax.models import abstract_variables, create_model

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / 'notebooks'


@pytest.fixture(autouse=True)
def unoptimized_kernels(monkeypatch):
  """Kernels inherit this environment: XLA compiles unoptimized code, twice as fast."""
  monkeypatch.setenv('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')


def run_notebook(name, cwd, **parameters):
  """Executes notebooks/NAME in `cwd` with `parameters` set after its 'parameters' cell."""
  notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
  index = next(i for i, cell in enumerate(notebook.cells)
               if 'parameters' in cell.metadata.get('tags', []))
  injected = '\n'.join(f'{key} = {value!r}' for key, value in parameters.items())
  notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(injected))
  nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                          resources={'metadata': {'path': str(cwd)}}).execute()
  return notebook


def _outputs(notebook, stream='stdout'):
  return '\n'.join(out.get('text', '') for cell in notebook.cells
                   for out in cell.get('outputs', []) if out.get('name') == stream)


def test_inference_notebook_classifies_with_release_weights(release_server, tmp_path):
  notebook = run_notebook('inference.ipynb', tmp_path, IMAGE_SIZE=64)
  rows = [line.split('%', 1) for line in _outputs(notebook).splitlines() if '%' in line]
  assert len(rows) == 10  # the top 5 of each of the two photos
  names = set(imagenet_class_names())
  assert all(name.strip() in names for _, name in rows)
  probabilities = [float(p) / 100 for p, _ in rows]
  assert all(0 < p <= 1 for p in probabilities)
  for top5 in (probabilities[:5], probabilities[5:]):
    assert top5 == sorted(top5, reverse=True)
  assert release_server.ranges == [None]  # downloaded once, with a progress bar
  assert 'smt_tiny.pth: 100%' in _outputs(notebook, 'stderr')
  assert (tmp_path / 'cache' / 'smt_tiny').is_dir()


def test_modulator_notebook_plots_modulators_and_attention(release_server, tmp_path):
  notebook = run_notebook('modulator.ipynb', tmp_path, IMAGE_SIZE=96)
  printed = _outputs(notebook)
  # Last SAM blocks of stages 1-3 at strides 4, 8, 16; stage 4 (3x3) attention, 16 heads.
  assert "modulator maps: [(2, 24, 24), (2, 12, 12), (2, 6, 6)]" in printed
  assert 'stage-4 attention: (2, 16, 9, 9)' in printed
  figures = [out for cell in notebook.cells for out in cell.get('outputs', [])
             if 'image/png' in out.get('data', {})]
  assert len(figures) == 2


def test_finetune_notebook_trains_from_weights_and_plots_curves(tmp_path):
  tiny = dict(embed_dims=(16, 32, 64, 128), depths=(1, 1, 2, 1))
  model = create_model('smt_t', **tiny)  # 1000 classes: the head is re-initialized for 10
  rng = np.random.default_rng(0)
  abstract = abstract_variables(model)
  variables = jax.tree.map(lambda a: (0.02 * rng.normal(size=a.shape)).astype(a.dtype),
                           abstract)
  variables['batch_stats'] = jax.tree.map(np.ones_like, variables['batch_stats'])
  weights.save(str(tmp_path / 'weights'), variables, model)
  notebook = run_notebook('finetune.ipynb', REPO, INIT_FROM=str(tmp_path / 'weights'),
                          WORKDIR=str(tmp_path / 'run'),
                          MODEL_OVERRIDES=dict(tiny, ops='xla'),  # compiles faster
                          IMAGE_SIZE=32, BATCH_SIZE=32, NUM_STEPS=4)
  printed = _outputs(notebook)
  assert 'top-1 ' in printed
  assert "'eval/top1': 4" in printed and "'train/loss': " in printed
  assert (tmp_path / 'run' / 'checkpoints').is_dir()
  figures = [out for cell in notebook.cells for out in cell.get('outputs', [])
             if 'image/png' in out.get('data', {})]
  assert len(figures) == 1


def test_segmentation_notebook_trains_and_colours_masks(tmp_path):
  notebook = run_notebook(
      'segmentation.ipynb', REPO, WORKDIR=str(tmp_path / 'run'), NUM_STEPS=4,
      MODEL_OVERRIDES=dict(embed_dims=(8, 16, 32, 64), depths=(1, 1, 1, 1), ops='xla'),
      HEAD_OVERRIDES=dict(channels=16, aux_channels=8))
  printed = _outputs(notebook)
  assert "'eval/mIoU': " in printed and "'eval/num_examples': 48" in printed
  assert 'classes: 0 background, 1 disc, 2 square, 3 triangle' in printed
  assert 'pixel accuracy on these scenes: ' in printed
  assert (tmp_path / 'run' / 'checkpoints' / '4').is_dir()
  figures = [out for cell in notebook.cells for out in cell.get('outputs', [])
             if 'image/png' in out.get('data', {})]
  assert len(figures) == 1
