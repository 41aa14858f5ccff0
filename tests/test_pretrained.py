"""Official weights by name, from a local HTTP server laid out like the release page."""
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from smt_jax import convert, pretrained, weights
from smt_jax.models import create_model

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(name='expected', scope='module')
def expected_fixture(release_file):
  """The release file converted directly, without the cache."""
  return convert.torch_to_flax(convert.load_state_dict(str(release_file)),
                               create_model('smt_t'))


def _assert_same(variables, expected):
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(variables), expected)


def test_downloads_once_then_loads_offline(release_server, expected, tmp_path):
  model, variables = weights.pretrained('smt_t', progress=False)
  assert model == create_model('smt_t')
  _assert_same(variables, expected)
  cache = tmp_path / 'cache'
  assert sorted(os.listdir(cache)) == ['smt_tiny', 'smt_tiny.pth', 'smt_tiny.pth.lock']
  release_server.stop()  # no network from here on
  again_model, again = weights.pretrained('smt_t', ops='xla')
  assert again_model == model.clone(ops='xla')
  _assert_same(again, expected)
  assert release_server.ranges == [None]


def test_resumes_a_cut_transfer(release_server, release_file, expected, tmp_path):
  cut = 5 << 20
  release_server.cut_next_after = cut
  with pytest.raises(pretrained.PretrainedError, match='broke off after 5,242,880 of'):
    weights.pretrained('smt_t', progress=False)
  part = tmp_path / 'cache' / 'smt_tiny.pth.part'
  assert part.stat().st_size == cut
  assert not (tmp_path / 'cache' / 'smt_tiny.pth').exists()
  _, variables = weights.pretrained('smt_t', progress=False)
  assert release_server.ranges == [None, f'bytes={cut}-']
  assert not part.exists()
  assert (tmp_path / 'cache' / 'smt_tiny.pth').read_bytes() == release_file.read_bytes()
  _assert_same(variables, expected)


def test_missing_file_names_the_url_and_where_to_put_it(release_server, tmp_path):
  with pytest.raises(pretrained.PretrainedError) as error:
    weights.pretrained('smt_s')
  message = str(error.value)
  assert f'{release_server.url}smt_small.pth answered HTTP 404' in message
  assert f'put it at {tmp_path / "cache" / "smt_small.pth"}' in message
  assert not (tmp_path / 'cache' / 'smt_small.pth').exists()


def test_no_network_names_the_url_and_where_to_put_it(release_server, release_file,
                                                      expected, tmp_path):
  release_server.stop()
  by_hand = tmp_path / 'cache' / 'smt_tiny.pth'
  with pytest.raises(pretrained.PretrainedError,
                     match=f'Could not reach {release_server.url}smt_tiny.pth.*put it at '
                     f'{by_hand}'):
    weights.pretrained('smt_t')
  shutil.copy(release_file, by_hand)  # as the message says
  _, variables = weights.pretrained('smt_t')
  _assert_same(variables, expected)


def test_a_file_that_is_not_a_checkpoint_is_not_kept(release_server, release_file, expected,
                                                      tmp_path):
  served = pathlib.Path(release_server.folder) / 'smt_tiny.pth'
  served.unlink()
  served.write_bytes(b'<html>rate limited</html>')
  with pytest.raises(pretrained.PretrainedError,
                     match='smt_tiny.pth did not give the smt_t checkpoint.*not a PyTorch zip'):
    weights.pretrained('smt_t', progress=False)
  assert sorted(os.listdir(tmp_path / 'cache')) == ['smt_tiny.pth.lock']
  served.unlink()
  os.symlink(release_file, served)  # the next try downloads afresh
  _, variables = weights.pretrained('smt_t', progress=False)
  _assert_same(variables, expected)


def test_unknown_name_lists_the_names():
  with pytest.raises(pretrained.PretrainedError,
                     match="'smt_tiny'; the names are smt_t, smt_s, smt_b, smt_l_22k, "
                     'smt_l_22k_224_ft, smt_l_22k_384_ft'):
    weights.pretrained('smt_tiny')


def test_release_table_builds_the_released_models():
  assert pretrained.url('smt_l_22k_384_ft') == (
      'https://github.com/AFeng-x/SMT/releases/download/v1.0.0/smt_large_22k_384_ft.pth')
  sizes = {name: (r.variant, r.num_classes, r.image_size)
           for name, r in pretrained.RELEASES.items()}
  assert sizes == {
      'smt_t': ('smt_t', 1000, 224), 'smt_s': ('smt_s', 1000, 224),
      'smt_b': ('smt_b', 1000, 224), 'smt_l_22k': ('smt_l', 21841, 224),
      'smt_l_22k_224_ft': ('smt_l', 1000, 224), 'smt_l_22k_384_ft': ('smt_l', 1000, 384)}


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.delenv('SMT_JAX_CACHE', raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert pretrained.default_cache_dir() == str(tmp_path / 'xdg' / 'smt_jax')
  monkeypatch.setenv('SMT_JAX_CACHE', str(tmp_path / 'mine'))
  assert pretrained.default_cache_dir() == str(tmp_path / 'mine')


def _run_cli(*args):
  return subprocess.run([sys.executable, '-m', 'smt_jax.convert', *args], cwd=REPO,
                        capture_output=True, text=True, check=False)


def test_command_line_fetches_and_converts_by_name(release_server, expected, tmp_path):
  out = tmp_path / 'converted'
  result = _run_cli('--pretrained=smt_t', f'--output_dir={out}')
  assert result.returncode == 0, result.stderr
  assert f'Wrote smt_t (11,506,536 parameters) to {out}' in result.stdout
  _, variables = weights.load(str(out))
  _assert_same(variables, expected)
  assert (tmp_path / 'cache' / 'smt_tiny').is_dir()  # and the cache keeps its copy


def test_command_line_errors_without_a_traceback(release_server, tmp_path):
  result = _run_cli('--pretrained=smt_s', f'--output_dir={tmp_path / "out"}')
  assert result.returncode == 1
  assert result.stderr.startswith('error: ') and 'HTTP 404' in result.stderr
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'out').exists()
  result = _run_cli('--pretrained=smt_t', '--model=smt_t', f'--output_dir={tmp_path / "out"}')
  assert result.returncode != 0 and 'Give either --pretrained=NAME' in result.stderr
