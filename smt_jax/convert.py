"""Official PyTorch SMT weights <-> Flax variables, strictly, and the converter's command line.

    python -m smt_jax.convert --checkpoint=smt_tiny.pth --model=smt_t --output_dir=DIR
    python -m smt_jax.convert --pretrained=smt_t --output_dir=DIR   # downloads it first

Every Flax leaf has exactly one official state_dict key (see `official_key`), so a
conversion either maps every key or stops with one error naming every missing,
unexpected and wrong-shape key. Nothing is left at random init unless asked for with
`head='reset'`, which starts a new classifier (fine-tuning to other classes).
`upernet_to_flax` converts the UperNet segmentation heads the same way.
"""
import os
import re
import shutil
import sys
import zipfile
from typing import Any, Dict, Mapping, Tuple

from absl import app
from absl import flags
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from smt_jax import weights
from smt_jax.labels import IMAGENET_22K_CLASSES
from smt_jax.models import SMT, abstract_variables, create_model
from smt_jax.models.layers import dense_init


# Flax module names whose official name differs (path segment -> official segments).
_RENAMES = {
    ('patch_embed1', 'conv1'): 'conv.0',
    ('patch_embed1', 'bn'): 'conv.1',
    ('patch_embed1', 'conv2'): 'conv.3',
    ('mlp', 'dwconv'): 'dwconv.dwconv',
}
_LEAVES = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
           'var': 'running_var'}


class CheckpointMismatchError(ValueError):
  """The state_dict does not fit the model; the message lists every offending key."""


def official_key(path: Tuple[str, ...]) -> str:
  """Official state_dict key of the Flax leaf at `path` (collection excluded)."""
  parts = []
  for i, name in enumerate(path):
    block = re.fullmatch(r'(block\d)_(\d+)', name)
    if i == len(path) - 1:
      parts.append(_LEAVES.get(name, name))
    elif block:
      parts.extend(block.groups())
    else:
      parts.append(_RENAMES.get((path[i - 1] if i else '', name), name))
  return '.'.join(parts)


def _to_flax_layout(array: np.ndarray, leaf: str) -> np.ndarray:
  if leaf == 'kernel' and array.ndim == 2:   # Linear (out, in) -> Dense (in, out)
    return array.T
  if leaf == 'kernel' and array.ndim == 4:   # Conv (out, in/groups, kh, kw) -> HWIO
    return array.transpose(2, 3, 1, 0)
  return array


def _to_torch_layout(array: np.ndarray, leaf: str) -> np.ndarray:
  if leaf == 'kernel' and array.ndim == 2:
    return array.T
  if leaf == 'kernel' and array.ndim == 4:
    return array.transpose(3, 2, 0, 1)
  return array


def _as_numpy(value: Any) -> np.ndarray:
  if hasattr(value, 'detach'):  # a torch tensor, without importing torch here
    value = value.detach().cpu().numpy()
  return np.asarray(value)


def _is_head(key: str) -> bool:
  return key.startswith('head.')


def torch_to_flax(state_dict: Mapping[str, Any], model: SMT, *, head: str = 'keep',
                  rng: jax.Array = None) -> Dict[str, Any]:
  """Returns {'params', 'batch_stats'} for `model` from an official state_dict.

  Args:
    state_dict: official key -> numpy array or torch tensor.
    model: the SMT module the weights are for (its fields must match the checkpoint).
    head: 'keep' converts the classifier and requires it to fit `model.num_classes`;
      'reset' ignores the checkpoint's classifier and initializes a new one from `rng`
      (or none, when `model.num_classes` is 0).
    rng: key for the new classifier with head='reset'.
  """
  if head not in ('keep', 'reset'):
    raise ValueError(f"head must be 'keep' or 'reset', got {head!r}")
  abstract = abstract_variables(model)
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(abstract))
  given = {k: v for k, v in state_dict.items() if not (head == 'reset' and _is_head(k))}

  if head == 'reset':
    flat = {path: leaf for path, leaf in flat.items() if path[1] != 'head'}
  converted, problems = _match(flat, given, official_key)
  if problems:
    raise CheckpointMismatchError(_mismatch_message(model, state_dict, problems))
  variables = flax.traverse_util.unflatten_dict(converted)
  if head == 'reset' and model.num_classes > 0:
    if rng is None:
      raise ValueError("head='reset' needs rng to initialize the new classifier.")
    head_layer = nn.Dense(model.num_classes, kernel_init=dense_init,
                          param_dtype=model.param_dtype, name='head')
    fresh = head_layer.init(rng, jnp.zeros((1, model.embed_dims[-1]), model.param_dtype))
    variables['params']['head'] = jax.device_get(fresh['params'])
  return variables


def _torch_shape(shape, leaf):
  """A Flax shape as the official checkpoint would show it."""
  return tuple(_to_torch_layout(np.empty(shape, np.bool_), leaf).shape)


def _match(flat, given, key_fn):
  """Flax leaves (path -> abstract leaf) filled from `given` (state_dict key -> array) by
  `key_fn(path without the collection)`; also the lines listing every missing, unexpected
  and wrong-shape key (none when everything fits)."""
  converted, missing, wrong_shape, expected_keys = {}, [], [], set()
  for path, leaf in flat.items():
    key = key_fn(path[1:])
    expected_keys.add(key)
    if key not in given:
      missing.append(f'  {key}: expected {_torch_shape(leaf.shape, path[-1])}')
      continue
    array = _to_flax_layout(_as_numpy(given[key]), path[-1])
    if array.shape != leaf.shape:
      wrong_shape.append(f'  {key}: expected {_torch_shape(leaf.shape, path[-1])}, '
                         f'found {_torch_shape(array.shape, path[-1])}')
      continue
    converted[path] = array.astype(leaf.dtype)
  unexpected = [f'  {k}: {tuple(_as_numpy(v).shape)}'
                for k, v in given.items() if k not in expected_keys]
  problems = []
  for title, items in (('Missing keys', missing), ('Unexpected keys', unexpected),
                       ('Wrong shapes', wrong_shape)):
    if items:
      problems.append(f'{title} ({len(items)}):')
      problems.extend(items)
  return converted, problems


def _mismatch_message(model, state_dict, problems) -> str:
  lines = ['The state_dict does not fit the model '
           f'(embed_dims={tuple(model.embed_dims)}, depths={tuple(model.depths)}, '
           f'num_classes={model.num_classes}).', *problems]
  if 'head.weight' in state_dict:
    classes = _as_numpy(state_dict['head.weight']).shape[0]
    if classes != model.num_classes:
      hint = (' (the ImageNet-22K head)' if classes == IMAGENET_22K_CLASSES else '')
      lines.append(f'The checkpoint has a {classes}-class head{hint}; build the model with '
                   f"num_classes={classes} to keep it, or pass head='reset' for a new "
                   f'{model.num_classes}-class head.')
  return '\n'.join(lines)


def flax_to_torch(variables: Mapping[str, Any]) -> Dict[str, np.ndarray]:
  """Official-layout state_dict (numpy arrays) from Flax {'params', 'batch_stats'}.

  Loadable with `load_state_dict(..., strict=True)` by the official PyTorch model and,
  through its converter, by the detection and segmentation code.
  """
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(dict(variables)))
  out = {}
  for path, value in flat.items():
    array = _to_torch_layout(np.asarray(jax.device_get(value)), path[-1])
    if path[-1] == 'num_batches_tracked':
      array = array.astype(np.int64)
    out[official_key(path[1:])] = array
  return out


# transformers' UperNet names -> mmseg's, which the Flax heads use.
_TRANSFORMERS_UPERNET = {'batch_norm': 'bn', 'classifier': 'conv_seg'}


def upernet_key(path: Tuple[str, ...]) -> str:
  """mmseg state_dict key, without the head's prefix, of the UPerHead or FCNHead leaf at
  `path` (collection excluded): lateral_convs_0/bn/scale -> lateral_convs.0.bn.weight."""
  parts = []
  for name in path[:-1]:
    indexed = re.fullmatch(r'(\w+?)_(\d+)', name)
    if not indexed:
      parts.append(name)
      continue
    parts.extend(indexed.groups())
    if indexed[1] == 'psp_modules':
      parts.append('1')  # item 0 of mmseg's nn.Sequential is the pooling, 1 the conv
  parts.append(_LEAVES.get(path[-1], path[-1]))
  return '.'.join(parts)


def upernet_to_flax(state_dict: Mapping[str, Any], variables: Mapping[str, Any],
                    prefix: str) -> Dict[str, Any]:
  """{'params', 'batch_stats'} of a UPerHead or FCNHead (smt_jax.models.upernet) from an
  mmseg or transformers UperNet state_dict, strictly.

  Args:
    state_dict: key -> numpy array or torch tensor, with mmseg's names
      (decode_head.lateral_convs.0.bn.weight) or transformers' (batch_norm, classifier).
    variables: the head's variables, or their shapes (jax.eval_shape of its init): the
      tree to fill.
    prefix: the head's keys start with this ('decode_head.' or 'auxiliary_head.'), which is
      stripped; keys without it are ignored.
  """
  given = {}
  for key, value in state_dict.items():
    if key.startswith(prefix):
      parts = key[len(prefix):].split('.')
      given['.'.join(_TRANSFORMERS_UPERNET.get(p, p) for p in parts)] = value
  flat = flax.traverse_util.flatten_dict(flax.core.unfreeze(dict(variables)))
  converted, problems = _match(flat, given, upernet_key)
  if problems:
    raise CheckpointMismatchError('\n'.join(
        [f'The {prefix!r} keys of the state_dict do not fit the head.', *problems]))
  return flax.traverse_util.unflatten_dict(converted)


def load_state_dict(path: str, prefix: str = '') -> Dict[str, Any]:
  """Reads an official release file: .pth/.pt ({'model': sd} or sd), .safetensors, .npz.

  A .pth is a pickle; it is read with torch.load(weights_only=True), which refuses any
  pickled code. `prefix` keeps only keys that start with it and strips it (for example
  'module.' or 'backbone.').
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'No checkpoint file at {path}.')
  ext = os.path.splitext(path)[1].lower()
  if ext in ('.pth', '.pt', '.bin'):
    state_dict = _load_pth(path)
  elif ext == '.safetensors':
    from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
    state_dict = load_file(path)
  elif ext == '.npz':
    with np.load(path, allow_pickle=False) as data:
      state_dict = {k: data[k] for k in data.files}
  else:
    raise ValueError(f'Unsupported checkpoint format {ext!r} ({path}); '
                     'expected .pth, .pt, .bin, .safetensors or .npz.')
  if prefix:
    state_dict = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not state_dict:
      raise ValueError(f'No key in {path} starts with prefix {prefix!r}.')
  return state_dict


def _load_pth(path: str) -> Dict[str, Any]:
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('Reading .pth files needs PyTorch: pip install "smt_jax[convert]".') from e
  if not zipfile.is_zipfile(path):
    raise ValueError(f'{path} is not a PyTorch zip checkpoint; legacy pickle files are '
                     'refused. Re-save it with torch.save or export it to .safetensors.')
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # torch raises UnpicklingError subclasses and RuntimeError here.
    raise ValueError(f'{path} holds more than tensors and plain containers (possibly '
                     f'code); refusing to unpickle it. torch said: {e}') from e
  if isinstance(obj, dict) and isinstance(obj.get('model'), dict):
    obj = obj['model']
  if not isinstance(obj, dict) or not all(hasattr(v, 'shape') for v in obj.values()):
    keys = list(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
    raise ValueError(f'{path} is neither a state_dict nor {{"model": state_dict}}; '
                     f'found {keys}.')
  return obj


FLAGS = flags.FLAGS


def _define_flags():
  """Flags live here, not at import, so importing this module defines no flags."""
  flags.DEFINE_string('pretrained', None, 'An official release by name (smt_t, smt_s, smt_b, '
                      'smt_l_22k, smt_l_22k_224_ft, smt_l_22k_384_ft): download and convert it.')
  flags.DEFINE_string('checkpoint', None, 'Official checkpoint (.pth, .safetensors, .npz).')
  flags.DEFINE_string('model', None, 'Variant: smt_t, smt_s, smt_b or smt_l.')
  flags.DEFINE_string('output_dir', None, 'Where to write the orbax checkpoint (must be new).')
  flags.DEFINE_integer('num_classes', 1000, 'Classes of the converted model (0: no head).')
  flags.DEFINE_enum('head', 'keep', ['keep', 'reset'],
                    "'reset' drops the checkpoint's classifier for a new one (fine-tuning).")
  flags.DEFINE_string('prefix', '', "Use only keys starting with this, stripped ('module.').")
  flags.DEFINE_integer('seed', 0, 'Seed for the new classifier with --head=reset.')
  flags.mark_flags_as_required(['output_dir'])
  flags.register_multi_flags_validator(
      ['pretrained', 'checkpoint', 'model'], _one_source,
      'Give either --pretrained=NAME, or --checkpoint=FILE with --model=VARIANT.')


def _one_source(values) -> bool:
  if values['pretrained']:
    return not (values['checkpoint'] or values['model'])
  return bool(values['checkpoint'] and values['model'])


def _convert_file(output_dir: str) -> Tuple[SMT, Dict[str, Any]]:
  model = create_model(FLAGS.model, num_classes=FLAGS.num_classes)
  try:
    state_dict = load_state_dict(FLAGS.checkpoint, FLAGS.prefix)
  except FileNotFoundError as e:
    raise SystemExit(f'error: {e} --checkpoint takes an official SMT release file (.pth, '
                     '.safetensors or .npz).') from None
  try:
    variables = torch_to_flax(state_dict, model, head=FLAGS.head,
                              rng=jax.random.PRNGKey(FLAGS.seed))
  except CheckpointMismatchError as e:
    raise SystemExit(f'Conversion stopped; nothing was written.\n{e}') from None
  weights.save(output_dir, variables, model)
  return model, variables


def _copy_pretrained(output_dir: str) -> Tuple[SMT, Dict[str, Any]]:
  # Imported here: smt_jax.pretrained imports this module.
  from smt_jax import pretrained  # pylint: disable=g-import-not-at-top
  try:
    cached = pretrained.weights_dir(FLAGS.pretrained)
  except pretrained.PretrainedError as e:
    sys.exit(f'error: {e}')
  shutil.copytree(cached, output_dir)
  return weights.load(output_dir)


def main(argv):
  del argv
  if os.path.exists(FLAGS.output_dir):
    raise app.UsageError(f'--output_dir {FLAGS.output_dir} exists; choose a new directory.')
  output_dir = os.path.abspath(FLAGS.output_dir)
  if FLAGS.pretrained:
    _, variables = _copy_pretrained(output_dir)
  else:
    _, variables = _convert_file(output_dir)
  count = sum(np.size(x) for x in jax.tree.leaves(variables['params']))
  print(f'Wrote {FLAGS.pretrained or FLAGS.model} ({count:,} parameters) to {output_dir}')


if __name__ == '__main__':
  _define_flags()
  app.run(main)
