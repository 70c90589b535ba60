"""The decoding engine against this machine's limits, in one run (issue 16, goals 1-3).

For each target (default: the pretrained SmolLM2-135M and the random 234M
``lm_target``) and weight dtype (float32, bfloat16), at batch size 1, warm
jit, every call ending in ``block_until_ready``:

1. **Decode step vs the memory-bandwidth limit.**  ``t_step``: one bare
   ``lm.decode_step`` scoring 1 token (:class:`dspec_models.measure.timing.CallTimer`:
   paired loops of ``span`` and ``4 span`` calls, the difference cancels the
   set-up).  The limit is ``(weight bytes + KV-cache bytes of the valid
   positions) / B`` with ``B`` this machine's copy bandwidth measured in the
   same run: ``numpy.copyto`` of a 256 MiB float32 array, counted as
   ``2 x 256 MiB`` of traffic (read + write) per copy, best of 3 per repeat.
   Goal: ``limit / t_step >= 0.7``.
2. **Verification cost.**  ``t_verify / t_step`` with ``t_verify`` a
   ``decode_step`` scoring ``gamma + 1 = 8`` tokens.  Goal ``<= 1.5``.  Printed
   beside it, the floor that the CPU's matrix products set: the same ratio for
   the model's weight matrices alone (every kernel and the embedding as
   ``[k, d_in] @ [d_in, d_out]`` products in the model's dtype, nothing else).
3. **Engine overhead.**  Time per SD block (``speculative_generate``, draft =
   the target's first layers for SmolLM2, the random 33M ``lm_draft`` for
   ``lm_target``) over ``gamma t_draft + t_verify``, and time per
   autoregressive token (``autoregressive_generate``) over ``t_step``, both
   from two generation lengths
   (:func:`~dspec_models.measure.timing.engine_iteration_seconds`).  Goal
   ``<= 1.1`` each.

``--clock process`` times CPU seconds of the process (all threads) instead of
elapsed time: on a machine shared with other jobs its ratios measure work,
not who held the cores (the copy bandwidth is timed on the same clock).

Every repeat samples all timers of a (model, dtype) back to back, so load
changes hit them alike; ratios are per repeat, printed as median
``[min-max]``.  The machine is shared: ranges are wide when others run.  It
also prints alpha and tau of the SD runs at T = 0 (greedy), so the float32
and bfloat16 rows show the effect of bfloat16 on acceptance (meaningless for
random weights).

Usage::

    python -m benchmarks.bench_decode [--models smollm2-135m,lm_target]
        [--dtypes float32,bfloat16] [--gamma 7] [--repeats 3] [--span 16]
        [--clock wall|process] [--out results/bench_decode]

``--models tiny`` runs random tiny models (seconds; what the tests use).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from benchmarks._report import write_report

GOALS = {"step_over_limit": 0.7, "verify_over_step": 1.5, "engine_over_model": 1.1}
COPY_BYTES = 256 * 2**20


def copy_bandwidth(nbytes: int = COPY_BYTES, best_of: int = 3, clock: str = "wall") -> float:
  """Bytes/s of ``numpy.copyto`` of an ``nbytes`` float32 array (read + write = 2 nbytes).

  >>> copy_bandwidth(2**20) > 1e8
  True
  """
  import numpy as np

  from dspec_models.measure.timing import get_clock

  timer = get_clock(clock)
  src = np.ones(nbytes // 4, np.float32)
  dst = np.empty_like(src)
  np.copyto(dst, src)
  best = float("inf")
  for _ in range(best_of):
    start = timer()
    np.copyto(dst, src)
    best = min(best, timer() - start)
  return 2 * src.nbytes / best


def kv_bytes(config, positions: float) -> float:
  """Bytes of the self-attention keys and values of ``positions`` cached positions."""
  import numpy as np

  item = np.dtype(config.dtype if config.dtype != "bfloat16" else "float16").itemsize
  return 2.0 * config.num_layers * config.kv_heads * config.head_dim * item * positions


def weight_matrices(params) -> list:
  """The model's weight matrices as ``(array, transposed)``: the step computes ``x @ W``
  (``transposed``: ``x @ W.T``, the tied embedding's logits ``h @ E^T``).

  Dense kernels ``[d_in, ..., d_out]`` are reshaped by their first axis (the
  output projection ``[H, Dh, d]`` by its last); 1-D leaves (norms, biases)
  and lookup tables (relative-position and position embeddings) are left out:
  they are not matrix products.  The arrays keep their stored layout (the
  embedding is not copied transposed): XLA's CPU products, bfloat16 ones above
  all, are much slower in the other layout.
  """
  import jax

  mats = []
  for path, x in jax.tree_util.tree_leaves_with_path(params):
    name = jax.tree_util.keystr(path)
    if x.ndim < 2 or "rel_embedding" in name or "position_embed" in name:
      continue
    if "embedding" in name:
      mats.append((x, True))
    elif "'out'" in name:
      mats.append((x.reshape(-1, x.shape[-1]), False))  # [H, Dh, d] -> [H Dh, d]
    else:
      mats.append((x.reshape(x.shape[0], -1), False))
  return mats


class MatmulTimer:
  """Seconds of every weight matrix's product with ``k`` rows (one jitted call).

  The products are returned, not reduced: a reduction fused into a bfloat16
  product sends XLA's CPU backend to a slow loop.
  """

  def __init__(self, params, k: int, dtype, clock: str = "wall"):
    import jax
    import jax.numpy as jnp

    mats = weight_matrices(params)
    self.arrays = [m for m, _ in mats]
    flags = tuple(t for _, t in mats)
    dims = sorted({m.shape[1] if t else m.shape[0] for m, t in mats})
    self.xs = {d: jnp.ones((k, d), dtype) for d in dims}

    @jax.jit
    def run(arrays, xs):
      return [xs[m.shape[1]] @ m.T if t else xs[m.shape[0]] @ m for m, t in zip(arrays, flags)]

    self.run = lambda: run(self.arrays, self.xs)
    self.clock = clock
    jax.block_until_ready(self.run())
    self.estimates: list[float] = []

  def sample(self) -> None:
    from dspec_models.measure.timing import time_call

    self.estimates.append(min(time_call(self.run, self.clock) for _ in range(3)))


def _load(name: str, seed: int):
  """``(target, draft, prompt [1, P], description)``."""
  import jax
  import numpy as np

  from dspec_models import configs, lm

  init = jax.jit(lm.init_params, static_argnums=0)
  rng = np.random.default_rng(seed)
  if name == "smollm2-135m":
    from dspec_models.pretrained import load_pretrained
    from dspec_models.pretrained.drafts import truncated_draft
    from dspec_models.pretrained.tokenizer import encode

    cfg, params, tok = load_pretrained(name)
    ids = encode(
      tok,
      "The history of the city begins in the early middle ages, when a small "
      "group of traders settled on the river bank and built",
    )
    if ids and ids[0] == cfg.bos_id:
      ids = ids[1:]
    prompt = np.asarray([ids], np.int32)
    draft = truncated_draft(cfg, params, 4)
    return (
      (cfg, params),
      draft,
      prompt,
      (
        "SmolLM2-135M-Instruct (GGUF); draft: its first 4 of "
        f"{cfg.num_layers} layers; a {prompt.shape[1]}-token "
        "text prompt"
      ),
    )
  names = {
    "lm_target": ("lm_target", "lm_draft", None),
    "tiny": ("tiny_lm_target", "tiny_lm_draft", 512),
  }
  if name not in names:
    raise ValueError(f"model must be smollm2-135m, lm_target or tiny; got {name!r}")
  t_name, d_name, vocab = names[name]
  over = {} if vocab is None else {"vocab_size": vocab}
  t_cfg, d_cfg = configs.get_config(t_name, **over), configs.get_config(d_name, **over)
  target = (t_cfg, init(t_cfg, jax.random.PRNGKey(seed)))
  draft = (d_cfg, init(d_cfg, jax.random.PRNGKey(seed + 1)))
  prompt = rng.integers(3, t_cfg.vocab_size, (1, 32)).astype(np.int32)
  return target, draft, prompt, f"random {t_name} / {d_name}; a random 32-token prompt"


def _range(values) -> dict:
  import numpy as np

  vals = [float(x) for x in values if x is not None]
  if not vals:
    return {"median": None, "min": None, "max": None}
  return {"median": float(np.median(vals)), "min": min(vals), "max": max(vals)}


def measure(
  target,
  draft,
  prompt,
  *,
  gamma: int,
  repeats: int,
  span: int,
  lengths: tuple[int, int],
  seed: int = 0,
  engine: bool = True,
  clock: str = "wall",
) -> dict:
  """Goals 1-3 of one (target, draft) pair in its current dtype (see module doc)."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from dspec_models import speculative as sd
  from dspec_models.measure.timing import CallTimer, engine_iteration_seconds
  from dspec_models.speculative import _cache_capacity

  t_cfg, t_params = target
  d_cfg, d_params = draft
  inputs = jnp.asarray(prompt, jnp.int32)
  t_len = _cache_capacity(t_cfg, inputs, max(lengths[1], span), gamma)
  d_len = _cache_capacity(d_cfg, inputs, max(lengths[1], span), gamma)
  step = CallTimer(t_cfg, t_params, inputs, k=1, cache_len=t_len, span=span, clock=clock)
  verify = CallTimer(t_cfg, t_params, inputs, k=gamma + 1, cache_len=t_len, span=span, clock=clock)
  d_step = CallTimer(d_cfg, d_params, inputs, k=1, cache_len=d_len, span=span, clock=clock)
  # Bare products in float32 only: stand-alone bfloat16 products hit slow XLA CPU loops
  # (0.5 s for SmolLM2's, 15x its whole bfloat16 decode step), no floor for the model.
  bare = t_cfg.dtype == "float32"
  mm1 = MatmulTimer(t_params, 1, t_cfg.jnp_dtype, clock) if bare else None
  mmk = MatmulTimer(t_params, gamma + 1, t_cfg.jnp_dtype, clock) if bare else None
  weight_bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(t_params))
  step_bytes = weight_bytes + kv_bytes(t_cfg, prompt.shape[1] + (span - 1) / 2)
  key = jax.random.PRNGKey(seed)
  run_ar = lambda n: sd.autoregressive_generate(
    target, inputs, temperature=0.0, key=key, max_new_tokens=n
  )
  run_sd = lambda n: sd.speculative_generate(
    target, draft, inputs, gamma=gamma, temperature=0.0, key=key, max_new_tokens=n
  )
  bandwidths, ar, blocks = [], [], []
  for _ in range(repeats):
    bandwidths.append(copy_bandwidth(clock=clock))
    for timer in (step, verify, d_step, mm1, mmk):
      if timer is not None:
        timer.sample()
    if engine:
      ar.append(engine_iteration_seconds(run_ar, lengths, 1, clock)["seconds"])
      blocks.append(engine_iteration_seconds(run_sd, lengths, 1, clock)["seconds"])
  t_step, t_verify, t_draft = step.estimates, verify.estimates, d_step.estimates
  out = {
    "weights_mb": weight_bytes / 1e6,
    "bytes_per_step_mb": step_bytes / 1e6,
    "copy_bandwidth_gbs": _range(b / 1e9 for b in bandwidths),
    "t_step_ms": _range(1e3 * t for t in t_step),
    "t_verify_ms": _range(1e3 * t for t in t_verify),
    "t_draft_ms": _range(1e3 * t for t in t_draft),
    "weights_read_gbs": _range(weight_bytes / t / 1e9 for t in t_step),
    "step_over_limit": _range(step_bytes / b / t for b, t in zip(bandwidths, t_step)),
    "verify_over_step": _range(v / t for v, t in zip(t_verify, t_step)),
  }
  m1, mk = (mm1.estimates, mmk.estimates) if bare else ([], [])
  flops = 2 * (gamma + 1) * weight_bytes / t_cfg.jnp_param_dtype.itemsize
  out["matmul_verify_over_step"] = _range(k / o for k, o in zip(mk, m1))
  out["matmul_share_of_step"] = _range(o / t for o, t in zip(m1, t_step))
  out["matmul_k_gflops"] = _range(flops / t / 1e9 for t in mk)
  if engine:
    out["ar_token_over_step"] = _range(a / t for a, t in zip(ar, t_step) if a)
    out["sd_block_over_model"] = _range(
      b / (gamma * d + v) for b, d, v in zip(blocks, t_draft, t_verify) if b
    )
    res = sd.speculative_generate(
      target, draft, inputs, gamma=gamma, temperature=0.0, key=key, max_new_tokens=lengths[1]
    )
    rec = sd.per_example_records(res)[0]
    out["alpha_t0"] = rec["alpha_tested"]
    out["tau_t0"] = rec["tau"]
    out["sd_tokens"] = sd.per_example_records(res)[0]["length"]
    out["sd_output"] = np.asarray(res.tokens)[0, : rec["length"]].tolist()
  return out


def _fmt(r: dict, digits: int = 2) -> str:
  if r.get("median") is None:
    return "-"
  return f"{r['median']:.{digits}f} [{r['min']:.{digits}f}-{r['max']:.{digits}f}]"


def _met(r: dict, goal: str) -> str:
  m = r.get("median")
  if m is None:
    return ""
  ok = m >= GOALS[goal] if goal == "step_over_limit" else m <= GOALS[goal]
  return " ok" if ok else " MISS"


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument(
    "--models",
    default="smollm2-135m,lm_target",
    help="targets: smollm2-135m, lm_target, tiny (default smollm2-135m,lm_target)",
  )
  parser.add_argument("--dtypes", default="float32,bfloat16", help="weight dtypes")
  parser.add_argument("--gamma", type=int, default=7, help="verification scores gamma+1 tokens")
  parser.add_argument("--repeats", type=int, default=3, help="paired repeats (default 3)")
  parser.add_argument(
    "--span", type=int, default=16, help="cache positions the step loops cycle through (default 16)"
  )
  parser.add_argument(
    "--lengths",
    default="8,24",
    help="the two generation lengths of the engine timings (default 8,24)",
  )
  parser.add_argument("--no-engine", action="store_true", help="skip goal 3 (engine timings)")
  parser.add_argument(
    "--clock",
    default="wall",
    choices=["wall", "process"],
    help="wall: elapsed time (default); process: CPU time of this process, all threads "
    "(work done, robust to other jobs on a shared machine; the copy bandwidth too)",
  )
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--out", default="results/bench_decode", help="JSON report directory")
  args = parser.parse_args(argv)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  from dspec_models.measure.pairs import prepare_model
  from dspec_models.measure.timing import load_average

  lengths = tuple(int(x) for x in args.lengths.split(","))
  load_before = load_average()
  rows = []
  print(
    f"bench_decode: batch 1, gamma+1 = {args.gamma + 1}, {args.repeats} paired repeats, "
    f"{args.clock} clock; "
    f"load average {load_before}"
  )
  for name in [m.strip() for m in args.models.split(",") if m.strip()]:
    target, draft, prompt, what = _load(name, args.seed)
    print(f"  {name}: {what}", flush=True)
    for dtype in [d.strip() for d in args.dtypes.split(",") if d.strip()]:
      t, d = (prepare_model(m, dtype=dtype) for m in (target, draft))
      row = {"model": name, "dtype": dtype, "what": what}
      row.update(
        measure(
          t,
          d,
          prompt,
          gamma=args.gamma,
          repeats=args.repeats,
          span=args.span,
          lengths=lengths,
          seed=args.seed,
          engine=not args.no_engine,
          clock=args.clock,
        )
      )
      rows.append(row)
      print(
        f"    {dtype}: step {_fmt(row['t_step_ms'], 1)} ms, {row['weights_mb']:.0f} MB "
        f"weights read at {_fmt(row['weights_read_gbs'], 1)} GB/s (copy bandwidth "
        f"{_fmt(row['copy_bandwidth_gbs'], 1)} GB/s)",
        flush=True,
      )
  header = (
    f"{'model':<13} {'dtype':<8} {'1: limit/t_step':>22} {'2: t_verify/t_step':>22} "
    f"{'bare matmuls':>18} {'3: SD block/model':>22} {'3: AR token/step':>22} "
    f"{'alpha,tau T=0':>14}"
  )
  print(
    f"\ngoals: 1 >= {GOALS['step_over_limit']}, 2 <= {GOALS['verify_over_step']}, "
    f"3 <= {GOALS['engine_over_model']}; median [min-max] over repeats (shared machine)"
  )
  print(header)
  for r in rows:
    at = f"{r['alpha_t0']:.2f}, {r['tau_t0']:.2f}" if r.get("alpha_t0") is not None else "-"
    print(
      f"{r['model']:<13} {r['dtype']:<8} "
      f"{_fmt(r['step_over_limit']) + _met(r['step_over_limit'], 'step_over_limit'):>22} "
      f"{_fmt(r['verify_over_step']) + _met(r['verify_over_step'], 'verify_over_step'):>22} "
      f"{_fmt(r['matmul_verify_over_step']):>18} "
      f"{_fmt(r.get('sd_block_over_model', {})) + _met(r.get('sd_block_over_model', {}), 'engine_over_model'):>22} "  # noqa: E501
      f"{_fmt(r.get('ar_token_over_step', {})) + _met(r.get('ar_token_over_step', {}), 'engine_over_model'):>22} "  # noqa: E501
      f"{at:>14}"
    )
  print(
    "1: (weights + valid KV bytes) / copy bandwidth over the measured step; "
    "bare matmuls: the model's weight products alone, k=8 over k=1 (the CPU's floor for 2)."
  )
  report = {
    "rows": rows,
    "gamma": args.gamma,
    "repeats": args.repeats,
    "span": args.span,
    "lengths": list(lengths),
    "clock": args.clock,
    "load_average": [load_before, load_average()],
    "bandwidth": f"numpy.copyto of {COPY_BYTES >> 20} MiB float32, 2 x bytes per copy",
  }
  if args.out:
    write_report(Path(args.out) / "bench_decode.json", report)
  return report


if __name__ == "__main__":
  main()
