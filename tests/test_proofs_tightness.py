"""Checks 9-10 at small sizes: the gradient search, its gradients, and the tau table."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from dspec_theory.markov import markov_lm, sequence_stats
from proofs_checks import tightness
from proofs_checks.counterexamples import tight_fixed_length_family
from proofs_checks.runner import Context


def _ctx(tmp_path):
  return Context(out_dir=str(tmp_path), quick=True, seed=0, progress=False)


def test_gradient_of_the_ratio_matches_finite_differences():
  """sequence_stats is differentiable: jax.grad agrees with central differences."""
  key = jax.random.key(0)
  logits = 1.5 * jax.random.normal(key, (2, 4, 3), jnp.float64)
  fixed = jnp.asarray(False)

  @jax.jit
  def f(x):
    p, q = tightness._lms_from_logits(x, fixed)
    return jnp.log(tightness.ratios_from_stats(sequence_stats(p, q, 4), 4)[0])

  g = np.asarray(jax.jit(jax.grad(f))(logits))
  assert np.all(np.isfinite(g))
  h = 1e-6
  for idx in [(0, 3, 1), (1, 0, 2), (0, 1, 0), (1, 3, 0)]:
    e = np.zeros(logits.shape)
    e[idx] = h
    fd = (float(f(logits + e)) - float(f(logits - e))) / (2 * h)
    assert abs(fd - g[idx]) < 1e-5 * max(1.0, abs(fd))


def test_tight_family_ratio_is_one_for_large_T():
  for T in (8, 32):
    pi, pt, qi, qt = tight_fixed_length_family(T)
    p = markov_lm(tightness._f(pi), tightness._f(pt), 0)
    q = markov_lm(tightness._f(qi), tightness._f(qt), 0)
    theorem, _ = tightness.ratios_from_stats(sequence_stats(p, q, T), T)
    assert abs(float(theorem) - 1.0) < 1e-12


def test_tightness_and_tau_checks_write_results(tmp_path):
  ctx = _ctx(tmp_path)
  out = tightness.check_tightness(ctx)
  assert out.status in ("PASS", "FINDING"), out.details
  assert "| FAIL |" not in out.details
  with open(os.path.join(tmp_path, "tightness_instances.json")) as f:
    saved = json.load(f)
  rows = saved["rows"]
  assert [r["T"] for r in rows] == [2, 3]
  for r in rows:
    assert r["theorem"] <= 1 + 1e-9 and r["fixed"] <= 1 + 1e-9  # Eq. 4 per input
    assert r["theorem"] > 0.9  # the search gets close to the tight value 1
    assert abs(r["family"] - 1) < 1e-12
  assert rows[0]["single"] <= 1 + 1e-9  # T = 2: product form cannot fail
  assert max(r["single"] for r in rows[1:]) > 1  # T >= 3: it can
  assert os.path.exists(os.path.join(tmp_path, "tightness.png"))
  out10 = tightness.check_tau_iid(ctx)
  assert out10.status == "PASS", out10.details
  assert "| gamma |" in out10.details
  assert os.path.exists(os.path.join(tmp_path, "tau_iid_error.png"))


def test_iid_formula_is_exact_when_acceptance_is_iid_and_long():
  """Constant acceptance, no EOS: the exact tau approaches (1 - a^(g+1)) / (1 - a) as T grows."""
  from dspec_theory.block import block_efficiency
  from dspec_theory.markov import sd_stats

  p, q = tightness._iid_control(256)
  errs = []
  for T in (64, 256):
    exact = float(sd_stats(p, q, T, 3).block_efficiency)
    errs.append(abs(exact - float(block_efficiency(0.7, 3))) / exact)
  assert errs[1] < errs[0] < 0.05
