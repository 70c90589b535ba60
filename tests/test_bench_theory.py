"""``benchmarks.bench_theory``: the byte and FLOP counts, the batched ``sd_stats``, the report.

Speed is never asserted (timings live in the benchmark's output); what is
checked is what the ratios are computed from: the bytes one step of
``sd_stats``'s recursion streams (a hand count, and the matrices the step of
the traced program actually closes over), that ``jax.vmap`` of ``sd_stats``
gives the per-chain results in float64, that the shared-transition case
really lowers to ``[B gamma, V] @ [V, V]`` matrix products, and that the
report's ratios follow from its own measurements.
"""

from __future__ import annotations

import doctest

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks import bench_theory as bt
from dspec_theory import markov as mk


def test_doctests_pass():
  assert doctest.testmod(bt).failed == 0


def test_step_bytes_by_hand():
  # V = 3, gamma = 2: a_ne 3x3 (9) + r_and_p 6x3 (18) + drafts_upto[room], a_eos (3 + 3)
  # + the state u 3x3 read and written (9 + 9) = 51 float64 numbers.
  assert bt.sd_stats_step_bytes(3, 2) == 51 * 8
  # Two chains with their own matrices: twice that; sharing them: 33 once + 18 per chain.
  assert bt.sd_stats_step_bytes(3, 2, chains=2) == 102 * 8
  assert bt.sd_stats_step_bytes(3, 2, chains=2, shared=True) == (33 + 36) * 8
  assert bt.sd_stats_step_bytes(3, 2, itemsize=4) == 51 * 4
  # FLOPs: T = 3 (2 steps) x 2 (gamma + 2) V^2 + the gamma-step draft-EOS chain 2 gamma V^2.
  assert bt.sd_stats_flops(3, 3, 2) == 2 * 2 * 4 * 9 + 2 * 2 * 9
  assert bt.sd_stats_flops(3, 3, 2, chains=4, shared=True) == 4 * 2 * 2 * 4 * 9 + 2 * 2 * 9


def _scan_of(jaxpr, length):
  """The ``scan`` of ``length`` steps in a jaxpr, searched through nested jaxprs (jit calls)."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "scan" and eqn.params["length"] == length:
      return eqn
    for param in eqn.params.values():
      inner = getattr(param, "jaxpr", param)  # ClosedJaxpr -> Jaxpr
      if isinstance(inner, jax.extend.core.Jaxpr):
        found = _scan_of(inner, length)
        if found is not None:
          return found
  return None


def test_step_bytes_match_the_matrices_the_recursion_closes_over():
  # Independent of the hand count: trace sd_stats and read off the recursion's scan.
  vocab, max_len, gamma = 5, 9, 3
  p = mk.random_markov_lm(jax.random.key(0), vocab, eos=1, mean_length=4.0)
  q = mk.perturbed_markov_lm(jax.random.key(1), p, 0.5)
  with jax.enable_x64(True):
    closed = jax.make_jaxpr(lambda p, q: mk.sd_stats(p, q, max_len, gamma))(p, q)
  scan = _scan_of(closed.jaxpr, max_len - 1)
  assert scan is not None
  num_consts, num_carry = scan.params["num_consts"], scan.params["num_carry"]
  shapes = [tuple(x.aval.shape) for x in scan.invars]
  consts, carry = shapes[:num_consts], shapes[num_consts : num_consts + num_carry]
  # The matrices streamed every step: [V, V] and [2V, V], nothing else of that size.
  assert sorted(s for s in consts if len(s) == 2 and s[1] == vocab and s[0] >= vocab) == [
    (vocab, vocab),
    (2 * vocab, vocab),
  ]
  # The carried state is [gamma + 1, V]; the remaining consts are vectors of V
  # (a_eos) and the [gamma + 1, V] table drafts_upto, of which one row is read.
  assert carry == [(gamma + 1, vocab)]
  assert sorted(consts) == sorted(
    [(vocab, vocab), (2 * vocab, vocab), (vocab,), (gamma + 1, vocab)]
  )
  numbers = 3 * vocab * vocab + 2 * int(np.prod(carry[0])) + vocab + vocab  # one drafts_upto row
  assert bt.sd_stats_step_bytes(vocab, gamma) == 8 * numbers


@pytest.mark.parametrize("shared", [False, True])
def test_batched_sd_stats_equals_per_chain_calls(shared):
  vocab, max_len, gamma, chains = 6, 9, 3, 3
  p_init, p_trans, q_init, q_trans = bt._random_pairs(vocab, chains, seed=7)
  assert p_trans.dtype == jnp.float64 and p_trans.shape == (chains, vocab, vocab)
  fn = bt.batched_sd_stats(max_len, gamma, shared=shared)
  with jax.enable_x64(True):
    args = (
      (p_init, q_init, p_trans[0], q_trans[0]) if shared else (p_init, p_trans, q_init, q_trans)
    )
    batched = fn(*args)
  for b in range(chains):
    k = 0 if shared else b
    p = mk.markov_lm(p_init[b], p_trans[k], 1)
    q = mk.markov_lm(q_init[b], q_trans[k], 1)
    one = mk.sd_stats(p, q, max_len, gamma)
    for field in one._fields:
      got, want = float(getattr(batched, field)[b]), float(getattr(one, field))
      assert got == pytest.approx(want, rel=1e-12, abs=1e-14), (b, field)
  # The chains differ (a batch of copies would pass trivially).
  assert len({round(float(x), 9) for x in batched.expected_target_calls}) == chains


def test_shared_transitions_lower_to_matrix_products():
  vocab, gamma, chains = 8, 3, 4
  p_init, p_trans, q_init, q_trans = bt._random_pairs(vocab, chains, seed=3)
  with jax.enable_x64(True):
    shared = bt.batched_sd_stats(6, gamma, shared=True).lower(
      p_init, q_init, p_trans[0], q_trans[0]
    )
    distinct = bt.batched_sd_stats(6, gamma).lower(p_init, p_trans, q_init, q_trans)
  text = shared.as_text()
  # [B, gamma, V] @ [V, V] (unbatched right-hand side: one matrix product for all chains)
  assert f"(tensor<{chains}x{gamma}x{vocab}xf64>, tensor<{vocab}x{vocab}xf64>)" in text
  assert f"(tensor<{chains}x{2 * vocab}xf64>, tensor<{2 * vocab}x{vocab}xf64>)" in text
  # Distinct chains: batched products over [B, V, V] matrices.
  assert f"tensor<{chains}x{vocab}x{vocab}xf64>" in distinct.as_text()
  assert "batching_dims" in distinct.as_text()


def test_bench_functions_and_report_on_tiny_sizes():
  size = dict(vocab=16, max_len=6, gamma=3)
  sd = bt.bench_sd_stats(**size, repeats=1, copy_bytes=2**22)
  assert sd["step_bytes"] == bt.sd_stats_step_bytes(16, 3)
  limit = (6 - 1) * sd["step_bytes"] / (sd["copy_bandwidth_gbs"] * 1e9)
  assert sd["bandwidth_limit_seconds"] == pytest.approx(limit)
  assert sd["fraction_of_bandwidth_limit"] == pytest.approx(limit / sd["sd_stats_seconds"])
  batched = bt.bench_batched(
    **size,
    batch_sizes=(3,),
    repeats=1,
    matmul_gflops=sd["matmul_gflops"],
    single_seconds=sd["sd_stats_seconds"],
    copy_bandwidth_gbs=sd["copy_bandwidth_gbs"],
  )
  rows = batched["rows"]
  assert [(r["case"], r["chains"]) for r in rows] == [("shared", 3), ("distinct", 3)]
  for r in rows:
    flops = bt.sd_stats_flops(16, 6, 3, r["chains"], r["case"] == "shared")
    assert r["gflops"] == pytest.approx(flops / r["seconds"] / 1e9)
    assert r["fraction_of_matmul"] == pytest.approx(r["gflops"] / sd["matmul_gflops"])
    assert r["per_chain_over_single"] == pytest.approx(
      r["seconds"] / r["chains"] / sd["sd_stats_seconds"]
    )
  lines = bt.report_lines(sd, batched)
  text = "\n".join(lines)
  assert "fraction of the bandwidth limit" in text and "(goal >= 0.5)" in text
  assert text.count("(goal >= 0.3)") == 2
  assert all(("met" in line) for line in lines if "goal >=" in line)
