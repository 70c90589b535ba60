"""Test-wide settings: float64 for exact probability comparisons."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

jax.config.update("jax_enable_x64", True)

settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    max_examples=50,
)
settings.load_profile("default")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
  """Drops JAX's compiled programs after each test module.

  A pytest-xdist worker lives for the whole suite; XLA's CPU backend maps
  memory for every executable it compiles, and workers that accumulated the
  programs of hundreds of modules crashed while compiling (segmentation
  fault) late in the run.  Modules do not share compiled programs usefully,
  so releasing them costs little.
  """
  yield
  jax.clear_caches()
