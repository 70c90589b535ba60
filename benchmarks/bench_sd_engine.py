"""Wall-clock benchmark of the speculative decoding engine at batch size 1.

Measures, in one run on the current device:

* ``t_ar``: autoregressive target decoding time (same engine code path);
* ``t_sd(gamma)``: speculative decoding time, gamma in {3, 5, 7};
* ``tau``: block efficiency of the run (tokens / target calls);
* ``c``: relative latency of one draft forward step vs one target forward
  step (each timed as a jitted loop of single-token ``decode_step`` calls on a
  cache of the size the engine uses);
* predicted speedup ``tau / (c gamma + 1)`` (paper section 3) and realized
  speedup ``t_ar / t_sd``, and their ratio (goal >= 0.9);
* ``t_verify``: the measured cost of the ``gamma + 1``-token verification
  call, and the prediction ``tau t_step / (gamma t_draft + t_verify)`` that
  uses it.  The paper's model assumes ``t_verify = t_step`` (true on
  memory-bound accelerators); on a CPU scoring ``gamma + 1`` tokens costs
  several steps, and the second ratio separates that hardware effect from
  engine overhead.

Greedy decoding (temperature 0) makes SD and AR produce identical tokens, so
both time the same amount of work.  Models: by default a random
``tiny_lm_target`` and a draft made of the target's first layer (perturbed),
so the draft is cheaper and agrees with the target often.  Random models say
nothing about real acceptance rates -- use the ``dspec sd`` measurement on
trained models for that; this script measures the engine's overhead.

Usage::

    python benchmarks/bench_sd_engine.py [--target tiny_lm_target] [--new-tokens 64]
        [--repeats 3] [--out results/bench_sd_engine.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from dspec_models import configs, lm
from dspec_models import speculative as sd
from dspec_models.testing import perturbed_params


def _median_time(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # compile + warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _call_time(config, params, inputs, cache_len: int, k: int, steps: int,
               repeats: int) -> float:
  """Seconds per ``decode_step`` call scoring ``k`` tokens (batch 1).

  Timed as a jitted loop of ``steps`` calls; after each call the cache is
  rolled back so it advances one position per call, as in decoding.  The
  set-up (prefill) time is measured separately and subtracted.
  """

  @jax.jit
  def run(params, inputs):
    state, tok = lm.init_decode_state(config, params, inputs, max_len=cache_len)

    def body(_, carry):
      state, tok = carry
      start = lm.decode_lengths(state)
      logits, state = lm.decode_step(config, params, state, jnp.tile(tok[:, None], (1, k)))
      state = lm.rollback(state, start + 1)
      return state, jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32)

    return jax.lax.fori_loop(0, steps, body, (state, tok))[1]

  run_init = jax.jit(lambda params, inputs: lm.init_decode_state(
      config, params, inputs, max_len=cache_len)[1])
  total = _median_time(lambda: run(params, inputs), repeats)
  setup = _median_time(lambda: run_init(params, inputs), repeats)
  return max(total - setup, 1e-9) / steps


def truncated_draft(target_config, target_params, seed: int, noise: float):
  """A draft made of the target's first decoder layer (plus noise): cheaper, correlated."""
  draft_config = dataclasses.replace(target_config, num_layers=1, name="truncated_draft")
  params = dict(target_params)
  params["decoder"] = {k: v for k, v in target_params["decoder"].items()
                       if not k.startswith("layer_") or k == "layer_0"}
  return draft_config, perturbed_params(params, seed, noise)


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--target", default="tiny_lm_target")
  parser.add_argument("--vocab-size", type=int, default=1024)
  parser.add_argument("--prompt-len", type=int, default=16)
  parser.add_argument("--new-tokens", type=int, default=64)
  parser.add_argument("--gammas", default="3,5,7")
  parser.add_argument("--noise", type=float, default=0.2)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--out", default="results/bench_sd_engine.json")
  args = parser.parse_args(argv)
  gammas = [int(g) for g in args.gammas.split(",")]

  target_config = configs.get_config(args.target, vocab_size=args.vocab_size)
  target_params = lm.init_params(target_config, jax.random.PRNGKey(0))
  draft_config, draft_params = truncated_draft(target_config, target_params, 1, args.noise)
  target = sd.LanguageModel(target_config, target_params)
  draft = sd.LanguageModel(draft_config, draft_params)
  rng = np.random.default_rng(0)
  inputs = rng.integers(3, args.vocab_size, (1, args.prompt_len)).astype(np.int32)
  key = jax.random.PRNGKey(0)
  new = args.new_tokens

  ar = sd.autoregressive_generate(target, inputs, temperature=0.0, key=key, max_new_tokens=new)
  t_ar = _median_time(lambda: sd.autoregressive_generate(
      target, inputs, temperature=0.0, key=key, max_new_tokens=new).tokens, args.repeats)
  cache_len = args.prompt_len + 1 + new + max(gammas) + 2
  t_target = _call_time(target_config, target_params, inputs, cache_len, 1, new, args.repeats)
  t_draft = _call_time(draft_config, draft_params, inputs, cache_len, 1, new, args.repeats)
  c = t_draft / t_target
  rows = []
  for gamma in tqdm(gammas, desc="gamma", file=sys.stderr):
    fn = lambda: sd.speculative_generate(target, draft, inputs, gamma=gamma, temperature=0.0,
                                         key=key, max_new_tokens=new)
    result = fn()
    assert np.array_equal(np.asarray(result.tokens), np.asarray(ar.tokens)), "greedy mismatch"
    t_sd = _median_time(lambda: fn().tokens, args.repeats)
    t_verify = _call_time(target_config, target_params, inputs, cache_len, gamma + 1, new,
                          args.repeats)
    summary = sd.summarize(result)
    tau = summary["pooled_tau"]
    predicted = tau / (c * gamma + 1)
    # Same model with the measured cost of the (gamma+1)-token verification call.
    predicted_measured = tau * t_target / (gamma * t_draft + t_verify)
    realized = t_ar / t_sd
    rows.append({"gamma": gamma, "tau": tau, "alpha_tested": summary["pooled_alpha_tested"],
                 "t_sd_s": t_sd, "t_verify_s": t_verify,
                 "verify_over_step": t_verify / t_target,
                 "predicted_speedup": predicted,
                 "predicted_speedup_measured_verify": predicted_measured,
                 "realized_speedup": realized,
                 "realized_over_predicted": realized / predicted,
                 "realized_over_predicted_measured_verify": realized / predicted_measured})
  report = {
      "device": str(jax.devices()[0]), "target": args.target, "vocab_size": args.vocab_size,
      "target_params": lm.count_params(target_params),
      "draft_params": lm.count_params(draft_params), "new_tokens": int(ar.lengths[0]),
      "t_ar_s": t_ar, "t_target_step_s": t_target, "t_draft_step_s": t_draft, "c": c,
      "rows": rows,
  }
  print(f"device {report['device']}  target {args.target} ({report['target_params']:,} params)"
        f"  draft ({report['draft_params']:,} params)  tokens {report['new_tokens']}")
  print(f"AR: {t_ar * 1e3:.1f} ms   target step {t_target * 1e3:.3f} ms   "
        f"draft step {t_draft * 1e3:.3f} ms   c = {c:.3f}")
  print(f"{'gamma':>5} {'tau':>6} {'alpha':>6} {'SD ms':>8} {'verify/step':>11} {'pred':>6} "
        f"{'pred*':>6} {'real':>6} {'real/pred':>9} {'real/pred*':>10}")
  for r in rows:
    print(f"{r['gamma']:>5} {r['tau']:>6.2f} {r['alpha_tested']:>6.3f} {r['t_sd_s'] * 1e3:>8.1f} "
          f"{r['verify_over_step']:>11.2f} {r['predicted_speedup']:>6.2f} "
          f"{r['predicted_speedup_measured_verify']:>6.2f} {r['realized_speedup']:>6.2f} "
          f"{r['realized_over_predicted']:>9.2f} {r['realized_over_predicted_measured_verify']:>10.2f}")
  print("pred = tau / (c gamma + 1) (paper, verification costs one step); pred* = "
        "tau t_step / (gamma t_draft + t_verify) with the measured verification cost.")
  if args.out:
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
      json.dump(report, f, indent=2)
  return report


if __name__ == "__main__":
  main()
