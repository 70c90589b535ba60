"""Cost of each distillation objective relative to forward KL, measured in one run.

One "step" is the jitted loss (Eq. 2, per-sequence normalisation, real-token
mask) and its gradient with respect to the student logits, on the same batch
of teacher and student logits ``[B, L, V]`` (float32).  The model's forward
and backward passes, which a real distillation step adds on top and which
are the same for every objective, are left out, so the ratios show the
objective's own cost (an upper bound on its effect on a whole step).

Objectives: every name of :func:`dspec_theory.objectives.objective_from_logits`
(FKL, RKL, JSD[0.5], TVD, -log beta, the KL/TVD hybrid, the block surrogate).

Run: ``python -m benchmarks.bench_objectives [--quick] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

OBJECTIVES = ("fkl", "rkl", "jsd:0.5", "tvd", "nla", "hybrid:1,3", "block:5")


def _interleaved_medians(fns: dict, repeats: int) -> dict:
  """Median wall time per function; calls interleaved round-robin so load drifts hit all alike."""
  for fn in fns.values():
    fn()   # compile and warm up
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def bench_objectives(batch=32, length=64, vocab=2000, repeats=7, objectives=OBJECTIVES) -> dict:
  """Median seconds per loss+gradient for each objective, and the ratio to FKL."""
  import jax
  import jax.numpy as jnp

  from dspec_theory.objectives import objective_from_logits

  k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
  teacher = 3.0 * jax.random.normal(k1, (batch, length, vocab), jnp.float32)
  student = teacher + 2.0 * jax.random.normal(k2, (batch, length, vocab), jnp.float32)
  lengths = jax.random.randint(k3, (batch,), length // 2, length + 1)
  mask = jnp.arange(length)[None, :] < lengths[:, None]

  def make_step(name):
    fn = objective_from_logits(name)

    def loss(s, t, m):
      values = fn(jax.lax.stop_gradient(t), s, where=m)
      per_seq = jnp.sum(values, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1)
      return jnp.mean(per_seq)

    step = jax.jit(jax.value_and_grad(loss))   # data as arguments: no constant folding
    return lambda: jax.block_until_ready(step(student, teacher, mask))

  seconds = _interleaved_medians({name: make_step(name) for name in objectives}, repeats)
  base = seconds[objectives[0]]
  return {"batch": batch, "length": length, "vocab": vocab, "repeats": repeats,
          "seconds": seconds, "ratio_to_fkl": {k: v / base for k, v in seconds.items()}}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="smaller batch, fewer repeats")
  parser.add_argument("--json", action="store_true", help="print JSON")
  args = parser.parse_args(argv)
  kwargs = dict(batch=8, length=32, vocab=1000, repeats=3) if args.quick else {}
  out = bench_objectives(**kwargs)
  if args.json:
    print(json.dumps(out, indent=2))
    return out
  print(f"distillation objectives: loss + gradient w.r.t. student logits, "
        f"B={out['batch']}, L={out['length']}, V={out['vocab']} (float32), median of "
        f"{out['repeats']} interleaved warm calls, relative to FKL")
  for name, ratio in out["ratio_to_fkl"].items():
    print(f"  {name:12s} {1e3 * out['seconds'][name]:8.2f} ms   {ratio:5.2f}x FKL")
  return out


if __name__ == "__main__":
  main()
