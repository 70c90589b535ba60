"""Benchmarks of the exact layer (issues 3 and 16), printed as ratios measured in one run.

1. ``sd_stats`` at V=1024, T=128, gamma=7 against the **bandwidth limit of its
   own recursion** (issue 16, goal 5).  Each of the ``T - 1`` steps of the
   token-verification recursion (``dspec_theory.markov._sd_stats_impl``,
   ``step``) streams, in float64 (8 bytes):

   * ``a_ne`` ``[V, V]`` (``u[:gamma] @ a_ne``, the accepted drafts) and
     ``r_and_p`` ``[2V, V]`` (``[pending, u[gamma]] @ r_and_p``, rejection and
     bonus): ``3 V^2`` numbers, the whole of the cost at V=1024 (24 MiB);
   * the state ``u`` ``[gamma + 1, V]``, read once and written once:
     ``2 (gamma + 1) V``;
   * the vectors ``drafts_upto[room]`` and ``a_eos``: ``2 V``;

   so ``step_bytes = 8 (3 V^2 + 2 (gamma + 1) V + 2 V)`` (:func:`sd_stats_step_bytes`)
   and the limit is ``t_limit = (T - 1) step_bytes / B_copy`` with ``B_copy``
   the copy bandwidth of :func:`benchmarks.bench_decode.copy_bandwidth`
   (``numpy.copyto`` of 256 MiB, read + write counted) measured in the same
   run.  The set-up before the recursion (the verification kernels, the
   ``gamma``-step draft-EOS chain: a few passes over ``V^2``) is not in the
   limit; it is charged to the call.  Printed: ``t_limit / t_call``, goal
   **>= 0.5**; the same for the recursion alone (``t(T) - t(T=2)``, ``T - 2``
   steps); and the copy bandwidth at the recursion's working-set size (a
   copy whose source + destination = ``step_bytes``, which fits this CPU's
   32 MiB L3), the yardstick if the matrices stay in cache.  The old
   yardstick, a dense 1024^3 float64 matmul's FLOP/s, was the wrong one for
   a matrix-vector recursion (``(gamma + 2) / 12`` FLOP per byte); its ratio
   is still printed, without a goal.  Also printed: the FLOP/s of the
   recursion's bare products alone (a scan of ``[gamma x V] @ [V x V]`` and
   ``[1 x 2V] @ [2V x V]`` over ``T - 1`` steps, nothing else).
2. **Batched** ``sd_stats``: ``jax.vmap`` of :func:`dspec_theory.markov.sd_stats`
   (unchanged) over ``B`` chains at V=1024, T=128, gamma=7, B = 1, 8, 32, 64,
   in two cases:

   * ``distinct``: every chain has its own ``p`` and ``q`` (init and
     transitions); the step's products become batched matrix-vector products
     ``[B, gamma, V] @ [B, V, V]`` and ``[B, 1, 2V] @ [B, 2V, V]``: each chain
     still streams its own ``3 V^2`` per step, so batching cannot raise the
     FLOP per byte; the batch is bound by bandwidth (``B step_bytes`` per step);
   * ``shared``: all chains share the transition matrices and differ in their
     initial distributions ``p.init``, ``q.init``; vmap then turns the
     products into real matrix products ``[B gamma, V] @ [V, V]`` and
     ``[B, 2V] @ [2V, V]`` (checked in the lowered program), which read
     each matrix once per step for all chains.

   Printed per B: useful FLOP/s of the batch (``B`` times the per-chain
   recursion FLOPs of :func:`sd_stats_flops`; in the shared case the
   draft-EOS chain counted once) over the dense-matmul FLOP/s of part 1
   (same run), goal **>= 0.3** (at the largest B), and the per-chain time over
   one single ``sd_stats`` call.  For the distinct case also the fraction of
   its bandwidth limit.
3. Monte Carlo speculative decoding of a Markov LM: samples per second of the
   vectorised JAX simulator relative to a straightforward pure-Python
   simulator of the same algorithm, at V=32/T=32/gamma=4 and at the
   sd_stats size V=1024/T=128/gamma=7. Goal >= 1000x.

Run: ``python -m benchmarks.bench_theory [--quick]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

from benchmarks._report import write_report


def _best_of(fn, repeats: int) -> float:
  """Median wall time of ``fn()`` over ``repeats`` warm calls (after one warm-up)."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


GOALS = {"fraction_of_bandwidth_limit": 0.5, "batched_fraction_of_matmul": 0.3}
BATCH_SIZES = (1, 8, 32, 64)


def sd_stats_flops(
  vocab: int, max_len: int, gamma: int, chains: int = 1, shared: bool = False
) -> int:
  """Useful FLOPs of ``sd_stats``'s token recursion for ``chains`` chains.

  Per step and chain ``[gamma x V] @ [V x V]`` (accepted drafts) and
  ``[1 x 2V] @ [2V x V]`` (rejection / bonus): ``2 (gamma + 2) V^2``, over
  ``T - 1`` steps; plus ``2 gamma V^2`` for the draft-EOS chain
  (``q_ne @ h``, ``gamma`` steps), once per chain, or once in all when the
  chains share their transitions (``shared``).

  >>> sd_stats_flops(2, 3, 1)  # 2 steps x 2 (1 + 2) 2^2 + 2 x 1 x 2^2
  56
  """
  per_chain = 2 * (max_len - 1) * (gamma + 2) * vocab * vocab
  draft_chain = 2 * gamma * vocab * vocab
  return chains * per_chain + (1 if shared else chains) * draft_chain


def sd_stats_step_bytes(
  vocab: int, gamma: int, chains: int = 1, shared: bool = False, itemsize: int = 8
) -> int:
  """Bytes one step of ``sd_stats``'s recursion must stream (module docstring, part 1).

  ``3 V^2`` (``a_ne`` and ``r_and_p``) + ``2 V`` (``drafts_upto[room]``,
  ``a_eos``) per chain, or once in all when the chains share their
  transitions (``shared``), + ``2 (gamma + 1) V`` (the state, read and
  written) per chain; times ``itemsize`` (float64: 8).

  >>> sd_stats_step_bytes(1024, 7) / 2**20  # MiB
  24.140625
  """
  matrices = 3 * vocab * vocab + 2 * vocab
  state = 2 * (gamma + 1) * vocab
  return itemsize * ((1 if shared else chains) * matrices + chains * state)


def _random_pairs(vocab: int, chains: int, seed: int = 0):
  """``chains`` random (p, q) pairs, stacked: ``(p_init, p_trans, q_init, q_trans)``."""
  import jax
  import jax.numpy as jnp

  from dspec_theory import markov as mk

  with jax.enable_x64(True):
    ps, qs = [], []
    for b in range(chains):
      k1, k2 = jax.random.split(jax.random.key(seed + b))
      p = mk.random_markov_lm(k1, vocab, eos=1, mean_length=64.0)
      ps.append(p)
      qs.append(mk.perturbed_markov_lm(k2, p, 0.5))
    return (
      jnp.stack([p.init for p in ps]),
      jnp.stack([p.trans for p in ps]),
      jnp.stack([q.init for q in qs]),
      jnp.stack([q.trans for q in qs]),
    )


def batched_sd_stats(max_len: int, gamma: int, shared: bool = False, eos: int = 1):
  """``jax.vmap`` of :func:`dspec_theory.markov.sd_stats` (token verification), jitted.

  ``shared=False``: ``f(p_init [B, V], p_trans [B, V, V], q_init, q_trans)``,
  one pair per chain.  ``shared=True``: ``f(p_init [B, V], q_init [B, V],
  p_trans [V, V], q_trans [V, V])``, the transitions shared by all chains
  (not batched).  Returns the batched :class:`~dspec_theory.markov.SDStats`.
  """
  import jax

  from dspec_theory import markov as mk

  def one(p_init, p_trans, q_init, q_trans):
    return mk.sd_stats(
      mk.MarkovLM(p_init, p_trans, eos), mk.MarkovLM(q_init, q_trans, eos), max_len, gamma
    )

  if shared:
    batched = jax.vmap(lambda pi, qi, pt, qt: one(pi, pt, qi, qt), in_axes=(0, 0, None, None))
  else:
    batched = jax.vmap(one)
  return jax.jit(batched)


def bench_sd_stats(vocab=1024, max_len=128, gamma=7, repeats=5, copy_bytes=None) -> dict:
  """``sd_stats`` against its bandwidth limit and the old dense-matmul yardstick (part 1).

  ``copy_bytes``: size of the bandwidth copy (default
  :data:`benchmarks.bench_decode.COPY_BYTES`, 256 MiB; the tests use less).
  """
  import jax
  import jax.numpy as jnp
  import numpy as np

  from benchmarks.bench_decode import COPY_BYTES, copy_bandwidth
  from dspec_theory import markov as mk

  copy_bytes = COPY_BYTES if copy_bytes is None else copy_bytes
  p = mk.random_markov_lm(jax.random.key(0), vocab, eos=1, mean_length=64.0)
  q = mk.perturbed_markov_lm(jax.random.key(1), p, 0.5)
  bandwidth = copy_bandwidth(copy_bytes)
  step_bytes = sd_stats_step_bytes(vocab, gamma)
  # Copy whose source + destination is the recursion's working set (cache-sized here).
  bandwidth_ws = copy_bandwidth(step_bytes // 2)
  t_sd = _best_of(
    lambda: mk.sd_stats(p, q, max_len, gamma).expected_target_calls.block_until_ready(), repeats
  )
  t_sd2 = _best_of(
    lambda: mk.sd_stats(p, q, 2, gamma).expected_target_calls.block_until_ready(), repeats
  )
  bandwidth = max(
    bandwidth, copy_bandwidth(copy_bytes)
  )  # best of the two samples around the timings
  t_limit = (max_len - 1) * step_bytes / bandwidth
  recursion_seconds = t_sd - t_sd2
  flops = sd_stats_flops(vocab, max_len, gamma)
  with jax.enable_x64(True):
    a = jnp.asarray(np.random.default_rng(0).random((vocab, vocab)))
    b = jnp.asarray(np.random.default_rng(1).random((vocab, vocab)))
    matmul = jax.jit(lambda x, y: x @ y)
    t_mm = _best_of(lambda: matmul(a, b).block_until_ready(), repeats)
  mm_flops = 2 * vocab**3
  with jax.enable_x64(True):
    rng = np.random.default_rng(2)
    kernel_a = jnp.asarray(rng.random((vocab, vocab)))
    kernel_rp = jnp.asarray(rng.random((2 * vocab, vocab)))
    state0 = jnp.asarray(rng.random((gamma + 1, vocab)) / vocab)

    @jax.jit
    def bare_products(u):
      def step(u, _):
        kept = u[:gamma] @ kernel_a
        restart = jnp.concatenate([u[0], u[gamma]]) @ kernel_rp
        return jnp.concatenate([restart[None], kept], axis=0) * 0.5, None

      return jax.lax.scan(step, u, None, length=max_len - 1)[0]

    t_bare = _best_of(lambda: bare_products(state0).block_until_ready(), repeats)
  bare_flops = 2 * (max_len - 1) * (gamma + 2) * vocab * vocab
  return {
    "vocab": vocab,
    "max_len": max_len,
    "gamma": gamma,
    "sd_stats_seconds": t_sd,
    "sd_stats_t2_seconds": t_sd2,
    "step_bytes": step_bytes,
    "copy_bytes": copy_bytes,
    "copy_bandwidth_gbs": bandwidth / 1e9,
    "copy_bandwidth_working_set_gbs": bandwidth_ws / 1e9,
    "bandwidth_limit_seconds": t_limit,
    "fraction_of_bandwidth_limit": t_limit / t_sd,
    "recursion_fraction_of_bandwidth_limit": (
      (max_len - 2) * step_bytes / bandwidth / recursion_seconds
      if recursion_seconds > 0
      else float("nan")
    ),
    "fraction_of_working_set_copy_limit": (max_len - 1) * step_bytes / bandwidth_ws / t_sd,
    "sd_stats_read_gbs": (max_len - 1) * step_bytes / t_sd / 1e9,
    "sd_stats_gflops": flops / t_sd / 1e9,
    "matmul_gflops": mm_flops / t_mm / 1e9,
    "flops_fraction_of_matmul": (flops / t_sd) / (mm_flops / t_mm),
    "bare_products_gflops": bare_flops / t_bare / 1e9,
    "bare_products_fraction_of_bandwidth_limit": t_limit / t_bare,
    "flops_fraction_of_bare_products": (flops / t_sd) / (bare_flops / t_bare),
  }


def bench_batched(
  vocab=1024,
  max_len=128,
  gamma=7,
  batch_sizes=BATCH_SIZES,
  repeats=3,
  matmul_gflops=None,
  single_seconds=None,
  copy_bandwidth_gbs=None,
  cases=("shared", "distinct"),
) -> dict:
  """``jax.vmap`` of ``sd_stats`` over B chains (module docstring, part 2).

  ``matmul_gflops``, ``single_seconds`` and ``copy_bandwidth_gbs`` are the
  references of :func:`bench_sd_stats` from the same run (measured here when
  not given).
  """
  import jax

  if matmul_gflops is None or single_seconds is None or copy_bandwidth_gbs is None:
    ref = bench_sd_stats(vocab, max_len, gamma, repeats=repeats)
    matmul_gflops, single_seconds = ref["matmul_gflops"], ref["sd_stats_seconds"]
    copy_bandwidth_gbs = ref["copy_bandwidth_gbs"]
  rows = []
  for case in cases:
    shared = case == "shared"
    fn = batched_sd_stats(max_len, gamma, shared=shared)
    fn_setup = batched_sd_stats(2, gamma, shared=shared)  # set-up + one step
    for chains in batch_sizes:
      p_init, p_trans, q_init, q_trans = _random_pairs(vocab, chains, seed=100)
      with jax.enable_x64(True):
        args = (
          (p_init, q_init, p_trans[0], q_trans[0]) if shared else (p_init, p_trans, q_init, q_trans)
        )
        t = _best_of(lambda: fn(*args).expected_target_calls.block_until_ready(), repeats)
        t2 = _best_of(lambda: fn_setup(*args).expected_target_calls.block_until_ready(), repeats)
      gflops = sd_stats_flops(vocab, max_len, gamma, chains, shared) / t / 1e9
      limit = (
        (max_len - 1)
        * sd_stats_step_bytes(vocab, gamma, chains, shared)
        / (copy_bandwidth_gbs * 1e9)
      )
      rows.append(
        {
          "case": case,
          "chains": chains,
          "seconds": t,
          "gflops": gflops,
          "fraction_of_matmul": gflops / matmul_gflops,
          "per_chain_over_single": t / chains / single_seconds,
          "fraction_of_bandwidth_limit": limit / t,
          "setup_seconds": t2,
        }
      )
  return {
    "vocab": vocab,
    "max_len": max_len,
    "gamma": gamma,
    "matmul_gflops": matmul_gflops,
    "single_seconds": single_seconds,
    "copy_bandwidth_gbs": copy_bandwidth_gbs,
    "rows": rows,
  }


# Markov LM sizes of the Monte Carlo comparison: small (Python's best case) to the
# sd_stats size (V=1024, T=128, gamma=7).
MC_SIZES = (
  dict(vocab=32, max_len=32, gamma=4, num_samples=200_000, python_samples=400),
  dict(vocab=1024, max_len=128, gamma=7, num_samples=50_000, python_samples=60),
)


def bench_monte_carlo(
  vocab=32, max_len=32, gamma=4, num_samples=200_000, python_samples=400
) -> dict:
  import jax
  import numpy as np

  from dspec_theory import enumeration as en, markov as mk, sampler

  p = mk.random_markov_lm(jax.random.key(2), vocab, eos=0, mean_length=20.0)
  q = mk.perturbed_markov_lm(jax.random.key(3), p, 0.5)

  def run_jax():
    res = sampler.simulate_markov(
      p, q, max_len, gamma, key=jax.random.key(4), num_samples=num_samples
    )
    res.length.block_until_ready()
    return res

  t_jax = _best_of(run_jax, 3)
  pf = mk.next_token_fn(p)
  qf = mk.next_token_fn(q)
  # Plain Python lists for the baseline (what a straightforward simulator would use).
  p_rows = {(): list(map(float, pf(())))}
  q_rows = {(): list(map(float, qf(())))}
  for x in range(vocab):
    p_rows[x] = list(map(float, pf((x,))))
    q_rows[x] = list(map(float, qf((x,))))
  p_py = lambda prefix: p_rows[prefix[-1]] if prefix else p_rows[()]
  q_py = lambda prefix: q_rows[prefix[-1]] if prefix else q_rows[()]
  start = time.perf_counter()
  out = en.sample_sequences_python(
    p_py, q_py, vocab, 0, max_len, gamma, seed=0, num_samples=python_samples
  )
  t_py = time.perf_counter() - start
  exact = mk.sd_stats(p, q, max_len, gamma)
  res = run_jax()
  return {
    "vocab": vocab,
    "max_len": max_len,
    "gamma": gamma,
    "jax_samples_per_second": num_samples / t_jax,
    "python_samples_per_second": python_samples / t_py,
    "speedup_vs_python": (num_samples / t_jax) / (python_samples / t_py),
    "exact_target_calls": float(exact.expected_target_calls),
    "jax_mean_target_calls": float(np.mean(np.asarray(res.target_calls))),
    "python_mean_target_calls": float(np.mean([c for _, c in out])),
  }


def _met(value: float, goal: float) -> str:
  return "met" if value >= goal else "not met"


def report_lines(sd: dict, batched: dict | None = None) -> list[str]:
  """The printed lines of parts 1 and 2 (module docstring)."""
  g_bw, g_mm = GOALS["fraction_of_bandwidth_limit"], GOALS["batched_fraction_of_matmul"]
  lines = [
    f"sd_stats (V={sd['vocab']}, T={sd['max_len']}, gamma={sd['gamma']})",
    f"  time {sd['sd_stats_seconds']:.3f} s per call (T=2: {sd['sd_stats_t2_seconds']:.4f} s);"
    f" recursion streams {sd['step_bytes'] / 2**20:.2f} MiB per step x {sd['max_len'] - 1}"
    f" steps = {sd['sd_stats_read_gbs']:.1f} GB/s achieved",
    f"  copy bandwidth {sd['copy_bandwidth_gbs']:.1f} GB/s (numpy.copyto {sd['copy_bytes'] >> 20} MiB, read + write);"
    f" bandwidth limit {sd['bandwidth_limit_seconds']:.3f} s",
    f"  fraction of the bandwidth limit (t_limit / t_call): "
    f"{sd['fraction_of_bandwidth_limit']:.2f}  (goal >= {g_bw}):"
    f" {_met(sd['fraction_of_bandwidth_limit'], g_bw)}",
    f"  the recursion alone (t(T) - t(T=2)): {sd['recursion_fraction_of_bandwidth_limit']:.2f}"
    f" of its limit; bare skinny products alone: "
    f"{sd['bare_products_fraction_of_bandwidth_limit']:.2f}",
    f"  copy bandwidth at the working-set size ({sd['step_bytes'] / 2**20:.0f} MiB src + dst,"
    f" cache-sized): {sd['copy_bandwidth_working_set_gbs']:.1f} GB/s; fraction of that limit"
    f" {sd['fraction_of_working_set_copy_limit']:.2f}",
    f"  old yardstick (no goal): {sd['sd_stats_gflops']:.1f} GFLOP/s = "
    f"{sd['flops_fraction_of_matmul']:.2f} of a dense f64 {sd['vocab']}^3 matmul"
    f" ({sd['matmul_gflops']:.1f} GFLOP/s); the bare products reach"
    f" {sd['bare_products_gflops']:.1f} GFLOP/s",
  ]
  if batched:
    lines.append(
      f"batched sd_stats, jax.vmap over B chains (V={batched['vocab']}, T={batched['max_len']},"
      f" gamma={batched['gamma']}); dense matmul {batched['matmul_gflops']:.1f} GFLOP/s,"
      f" one call {batched['single_seconds']:.3f} s"
    )
    for case in dict.fromkeys(r["case"] for r in batched["rows"]):
      rows = [r for r in batched["rows"] if r["case"] == case]
      what = (
        "transitions shared, inits per chain: [B gamma, V] @ [V, V]"
        if case == "shared"
        else "p, q per chain: [B, gamma, V] @ [B, V, V]"
      )
      lines.append(f"  {case} ({what})")
      for r in rows:
        lines.append(
          f"    B={r['chains']:3d}: {r['seconds']:.3f} s, {r['gflops']:.1f} GFLOP/s ="
          f" {r['fraction_of_matmul']:.2f} of matmul; per chain {r['per_chain_over_single']:.3f}"
          f" x one call; {r['fraction_of_bandwidth_limit']:.2f} of its bandwidth limit;"
          f" set-up (T=2) {r['setup_seconds']:.3f} s"
        )
      top = rows[-1]
      lines.append(
        f"    fraction of dense-matmul FLOP/s at B={top['chains']}:"
        f" {top['fraction_of_matmul']:.2f}  (goal >= {g_mm}):"
        f" {_met(top['fraction_of_matmul'], g_mm)}"
      )
  return lines


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
  parser.add_argument(
    "--batch-sizes",
    default=None,
    help="comma-separated B of the batched part (default 1,8,32,64; quick 1,8)",
  )
  parser.add_argument("--json", default=None, help="also write the results to this file")
  args = parser.parse_args(argv)
  size = (
    dict(vocab=256, max_len=32, gamma=7) if args.quick else dict(vocab=1024, max_len=128, gamma=7)
  )
  batch_sizes = (
    tuple(int(b) for b in args.batch_sizes.split(","))
    if args.batch_sizes
    else (1, 8)
    if args.quick
    else BATCH_SIZES
  )
  sd = bench_sd_stats(**size, repeats=2 if args.quick else 5)
  batched = bench_batched(
    **size,
    batch_sizes=batch_sizes,
    repeats=2 if args.quick else 3,
    matmul_gflops=sd["matmul_gflops"],
    single_seconds=sd["sd_stats_seconds"],
    copy_bandwidth_gbs=sd["copy_bandwidth_gbs"],
  )
  print("\n".join(report_lines(sd, batched)))
  if args.quick:
    mcs = [bench_monte_carlo(num_samples=20_000, python_samples=100)]
  else:
    mcs = [bench_monte_carlo(**size) for size in MC_SIZES]
  for mc in mcs:
    print(
      f"Monte Carlo SD on a Markov LM (V={mc['vocab']}, T={mc['max_len']}, gamma={mc['gamma']})"
    )
    print(
      f"  JAX {mc['jax_samples_per_second']:.0f} samples/s, pure Python"
      f" {mc['python_samples_per_second']:.0f} samples/s"
    )
    print(f"  ratio: {mc['speedup_vs_python']:.0f}x  (goal >= 1000x)")
    print(
      f"  E[target calls]: exact {mc['exact_target_calls']:.4f}, JAX MC"
      f" {mc['jax_mean_target_calls']:.4f}, Python MC {mc['python_mean_target_calls']:.4f}"
    )
  results = {"sd_stats": sd, "batched": batched, "monte_carlo": mcs}
  if args.json:
    write_report(args.json, results)
  return results


if __name__ == "__main__":
  main()
