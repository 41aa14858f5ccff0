"""Prints a pip constraints file pinning every direct dependency to its lower bound.

The bounds live in one place, setup.cfg: install_requires and the extras named on the
command line (default: test). Each requirement must have a `>=` bound; one without is an
error, so that a new dependency cannot slip into the lowest-versions run untested.

  python .ci/lowest.py [extra ...] > constraints.txt
"""
import configparser
import pathlib
import re
import sys

_REQUIREMENT = re.compile(r'^([A-Za-z0-9_.\-]+)\s*>=\s*([^,;\s]+)')


def lower_bounds(setup_cfg, extras):
  config = configparser.ConfigParser()
  config.read(setup_cfg)
  lines = config['options']['install_requires'].splitlines()
  for extra in extras:
    lines += config['options.extras_require'][extra].splitlines()
  pins = {}
  for line in filter(None, (l.strip() for l in lines)):
    match = _REQUIREMENT.match(line)
    if not match:
      sys.exit(f'error: {setup_cfg}: requirement {line!r} has no ">=" lower bound')
    pins[match[1].lower()] = match[2]
  return pins


def main(argv):
  setup_cfg = pathlib.Path(__file__).resolve().parents[1] / 'setup.cfg'
  for name, version in lower_bounds(setup_cfg, argv[1:] or ['test']).items():
    print(f'{name}=={version}')


if __name__ == '__main__':
  main(sys.argv)
