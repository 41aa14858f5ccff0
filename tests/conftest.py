"""Shared fixtures: the official-code test vectors that parity and conversion tests read."""
import pytest

from testvectors import CASES, Vector


@pytest.fixture(scope='session', params=CASES)
def vector(request):
  return Vector(request.param)
