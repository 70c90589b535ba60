"""Runs every benchmark: ``python -m benchmarks``.

1. :mod:`benchmarks.bench_theory`: the exact layer (``sd_stats`` against the
   bandwidth limit of its own recursion, batched by vmap; Monte Carlo
   simulator speed).
2. :mod:`benchmarks.bench_sd_engine`: realized vs predicted wall-clock speedup
   of speculative decoding (trained run directories if present, else random
   tiny models; the output says which); then ``--smollm2``: the realized
   speedup on the real SmolLM2-135M target with a distilled draft (goal 4).
3. :mod:`benchmarks.bench_distill`: GKD step time / supervised step time, and
   student-sampling tokens/s.
4. :mod:`benchmarks.bench_objectives`: loss+gradient time of each distillation
   objective relative to FKL on the same batch.
5. :mod:`benchmarks.bench_decode`: the decode step of SmolLM2-135M and the
   234M ``lm_target`` (float32, bfloat16) against the memory-bandwidth limit,
   the (gamma+1)-token verification cost, and the engine's overhead per SD
   block and per autoregressive token.
6. :mod:`benchmarks.bench_peer`: autoregressive tokens/s of llama.cpp
   (``llama-cpp-python``, the ``peer`` extra) beside ours on the same GGUF
   model, float32 and its native Q4_1; a one-line skip when it is not installed.
"""

from benchmarks import (
  bench_decode,
  bench_distill,
  bench_objectives,
  bench_peer,
  bench_sd_engine,
  bench_theory,
)

if __name__ == "__main__":
  bench_theory.main([])
  print()
  bench_sd_engine.main([])
  print()
  # Goal 4: the real SmolLM2-135M target with the distilled, head-restricted draft (one line
  # "skipped" when that draft has not been made; README, "DistillSpec on SmolLM2-135M").
  bench_sd_engine.main(["--smollm2"])
  print()
  bench_distill.main([])
  print()
  bench_objectives.main([])
  print()
  bench_decode.main([])
  print()
  bench_peer.main([])
