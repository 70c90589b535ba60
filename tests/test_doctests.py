"""The ``>>>`` examples of every public module run, in float32 default mode.

Each package runs in its own process (``tests/doctest_runner.py``), so the suite's
float64 setting (conftest) cannot hide an example that only passes in float64.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # imports every module of the package in a fresh process (~1 min)
@pytest.mark.parametrize(
  "package", ["dspec_theory", "dspec_models", "dspec_cli", "proofs_checks", "experiments"]
)
def test_doctests_of_every_public_module_pass(package):
  env = dict(os.environ, JAX_ENABLE_X64="0", XLA_FLAGS="")
  run = subprocess.run(
    [sys.executable, "-m", "tests.doctest_runner", package],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
  if package in ("dspec_theory", "dspec_models"):  # the formula layers document by example
    assert len(run.stdout.strip().splitlines()) >= 5, run.stdout
