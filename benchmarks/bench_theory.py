"""Benchmarks of the exact layer (issue 3), printed as ratios measured in one run.

1. ``sd_stats`` at V=1024, T=128, gamma=7: achieved FLOP/s (useful
   multiply-adds of the recursion divided by wall time) as a fraction of a
   plain dense float64 1024x1024 matmul's FLOP/s on the same machine, same run.
   Goal >= 0.5.  Also printed: the FLOP/s of the recursion's bare products
   alone (a scan of ``[gamma x V] @ [V x V]`` and ``[1 x 2V] @ [2V x V]`` over
   ``T - 1`` steps, nothing else), i.e. what this machine attains for those
   skinny, bandwidth-bound shapes, and the recursion's fraction of it.
2. Monte Carlo speculative decoding of a Markov LM: samples per second of the
   vectorised JAX simulator relative to a straightforward pure-Python
   simulator of the same algorithm, at V=32/T=32/gamma=4 and at the
   sd_stats size V=1024/T=128/gamma=7. Goal >= 1000x.

Run: ``python -m benchmarks.bench_theory [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def _best_of(fn, repeats: int) -> float:
  """Median wall time of ``fn()`` over ``repeats`` warm calls (after one warm-up)."""
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def bench_sd_stats(vocab=1024, max_len=128, gamma=7, repeats=5) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from dspec_theory import markov as mk

  p = mk.random_markov_lm(jax.random.key(0), vocab, eos=1, mean_length=64.0)
  q = mk.perturbed_markov_lm(jax.random.key(1), p, 0.5)
  t_sd = _best_of(lambda: mk.sd_stats(p, q, max_len, gamma).expected_target_calls.block_until_ready(),
                  repeats)
  # FLOPs of the recursion: per step [gamma x V] @ [V x V] (accept) and
  # [1 x 2V] @ [2V x V] (reject / bonus); plus gamma V^2 for the draft-EOS chain.
  flops = 2 * (max_len - 1) * (gamma + 2) * vocab * vocab + 2 * gamma * vocab * vocab
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
      "sd_stats_seconds": t_sd,
      "sd_stats_gflops": flops / t_sd / 1e9,
      "matmul_gflops": mm_flops / t_mm / 1e9,
      "flops_fraction_of_matmul": (flops / t_sd) / (mm_flops / t_mm),
      "bare_products_gflops": bare_flops / t_bare / 1e9,
      "flops_fraction_of_bare_products": (flops / t_sd) / (bare_flops / t_bare),
  }


# Markov LM sizes of the Monte Carlo comparison: small (Python's best case) to the
# sd_stats size (V=1024, T=128, gamma=7).
MC_SIZES = (dict(vocab=32, max_len=32, gamma=4, num_samples=200_000, python_samples=400),
            dict(vocab=1024, max_len=128, gamma=7, num_samples=50_000, python_samples=60))


def bench_monte_carlo(vocab=32, max_len=32, gamma=4, num_samples=200_000, python_samples=400) -> dict:
  import jax
  import numpy as np

  from dspec_theory import enumeration as en, markov as mk, sampler

  p = mk.random_markov_lm(jax.random.key(2), vocab, eos=0, mean_length=20.0)
  q = mk.perturbed_markov_lm(jax.random.key(3), p, 0.5)

  def run_jax():
    res = sampler.simulate_markov(p, q, max_len, gamma, key=jax.random.key(4),
                                  num_samples=num_samples)
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
  out = en.sample_sequences_python(p_py, q_py, vocab, 0, max_len, gamma, seed=0,
                                   num_samples=python_samples)
  t_py = time.perf_counter() - start
  exact = mk.sd_stats(p, q, max_len, gamma)
  res = run_jax()
  return {
      "vocab": vocab, "max_len": max_len, "gamma": gamma,
      "jax_samples_per_second": num_samples / t_jax,
      "python_samples_per_second": python_samples / t_py,
      "speedup_vs_python": (num_samples / t_jax) / (python_samples / t_py),
      "exact_target_calls": float(exact.expected_target_calls),
      "jax_mean_target_calls": float(np.mean(np.asarray(res.target_calls))),
      "python_mean_target_calls": float(np.mean([c for _, c in out])),
  }


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
  parser.add_argument("--json", default=None, help="also write the results to this file")
  args = parser.parse_args(argv)
  if args.quick:
    sd = bench_sd_stats(vocab=256, max_len=32, repeats=2)
    mcs = [bench_monte_carlo(num_samples=20_000, python_samples=100)]
  else:
    sd = bench_sd_stats()
    mcs = [bench_monte_carlo(**size) for size in MC_SIZES]
  print("sd_stats (V=1024, T=128, gamma=7)" if not args.quick else "sd_stats (quick)")
  print(f"  time {sd['sd_stats_seconds']:.3f} s, {sd['sd_stats_gflops']:.1f} GFLOP/s;"
        f" dense f64 matmul {sd['matmul_gflops']:.1f} GFLOP/s")
  print(f"  FLOP/s fraction of matmul: {sd['flops_fraction_of_matmul']:.2f}  (goal >= 0.5)")
  print(f"  the same skinny products alone: {sd['bare_products_gflops']:.1f} GFLOP/s;"
        f" sd_stats reaches {sd['flops_fraction_of_bare_products']:.2f} of that")
  for mc in mcs:
    print(f"Monte Carlo SD on a Markov LM (V={mc['vocab']}, T={mc['max_len']}, "
          f"gamma={mc['gamma']})")
    print(f"  JAX {mc['jax_samples_per_second']:.0f} samples/s, pure Python"
          f" {mc['python_samples_per_second']:.0f} samples/s")
    print(f"  ratio: {mc['speedup_vs_python']:.0f}x  (goal >= 1000x)")
    print(f"  E[target calls]: exact {mc['exact_target_calls']:.4f}, JAX MC"
          f" {mc['jax_mean_target_calls']:.4f}, Python MC {mc['python_mean_target_calls']:.4f}")
  if args.json:
    with open(args.json, "w") as f:
      json.dump({"sd_stats": sd, "monte_carlo": mcs}, f, indent=2)


if __name__ == "__main__":
  main()
