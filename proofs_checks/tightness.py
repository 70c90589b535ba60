r"""Checks 9-10: how tight Theorem 4.1 is, and the i.i.d. block-efficiency formula.

Check 9 maximises, by gradient ascent through the exact layer
(:func:`dspec_theory.markov.sequence_stats` is JAX and differentiable), three
ratios over target/draft Markov chains parametrised by logits, for
``T = 2..32``:

* ``theorem``: ``(1 - alpha) / (T (T / L_p) eps)``, the slack of Eq. 4 for one
  input (at most 1 if Eq. 4 holds per input);
* ``fixed``: the same with a target that never emits EOS (``L_p = T``), where
  Eq. 4 reads ``1 - alpha <= T eps``; its maximum times ``T`` is the growth of
  ``(1 - alpha) / eps`` with ``T``;
* ``single``: ``(1 - alpha) / (T eps)``; the product form of Eq. 4 holds for every
  input distribution iff this is at most 1 for every input (see
  :mod:`proofs_checks.counterexamples`).

Each search runs ``restarts`` random initialisations in parallel (``vmap``) for
``steps`` Adam steps on the log of the ratio and keeps the best point seen.
The exact tight family (:func:`~proofs_checks.counterexamples.tight_fixed_length_family`)
shows the factor ``T`` is attained.

Check 10 compares, on the instances found and on random pairs, the i.i.d.
block efficiency ``tau(alpha, gamma) = (1 - alpha^(gamma+1)) / (1 - alpha)``
(section 3) with the exact finite-gamma value of
:func:`dspec_theory.markov.sd_stats`.
"""

from __future__ import annotations

import functools
import json
import os
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import numpy as np

from proofs_checks.assertions import Ledger
from proofs_checks.counterexamples import tight_fixed_length_family
from proofs_checks.runner import Context, Outcome

OBJECTIVES = ("theorem", "fixed", "single")
EOS = 0


def _lms_from_logits(logits, fixed_length):
  """(p, q) MarkovLMs from logits ``[2, V + 1, V]``; row V is the start row."""
  import jax
  import jax.numpy as jnp

  from dspec_theory.markov import MarkovLM

  p_logits = jnp.where(fixed_length & (jnp.arange(logits.shape[-1]) == EOS), -jnp.inf, logits[0])
  p_rows = jax.nn.softmax(p_logits, axis=-1)
  q_rows = jax.nn.softmax(logits[1], axis=-1)
  return MarkovLM(p_rows[-1], p_rows[:-1], EOS), MarkovLM(q_rows[-1], q_rows[:-1], EOS)


def ratios_from_stats(s, max_len):
  """``(theorem ratio, single ratio)`` from :class:`~dspec_theory.markov.SequenceStats`."""
  one_minus_alpha = 1.0 - s.alpha
  theorem = one_minus_alpha * s.expected_len / (max_len * max_len * s.eps)
  single = one_minus_alpha / (max_len * s.eps)
  return theorem, single


@functools.lru_cache(maxsize=None)
def _search_fn(max_len: int, steps: int, lr: float):
  """A jitted, vmapped Adam search for one ``T`` (cached per T)."""
  import jax
  import jax.numpy as jnp
  import optax

  from dspec_theory.markov import sequence_stats

  def log_objective(logits, which, fixed):
    p, q = _lms_from_logits(logits, fixed)
    s = sequence_stats(p, q, max_len)
    theorem, single = ratios_from_stats(s, max_len)
    value = jnp.where(which == 2, single, theorem)
    return jnp.log(value), value

  grad_fn = jax.value_and_grad(log_objective, has_aux=True)
  opt = optax.adam(lr)

  def run_one(logits0, which, fixed):
    def body(carry, _):
      logits, state, best_val, best_logits = carry
      (_, val), g = grad_fn(logits, which, fixed)
      ok = jnp.isfinite(val) & jnp.all(jnp.isfinite(g))
      better = ok & (val > best_val)
      best_val = jnp.where(better, val, best_val)
      best_logits = jnp.where(better, logits, best_logits)
      g = jnp.where(ok, g, 0.0)
      updates, state = opt.update(-g, state, logits)  # ascent
      logits = optax.apply_updates(logits, updates)
      return (logits, state, best_val, best_logits), None

    carry = (logits0, opt.init(logits0), jnp.asarray(-jnp.inf, logits0.dtype), logits0)
    (_, _, best_val, best_logits), _ = jax.lax.scan(body, carry, None, length=steps)
    return best_val, best_logits

  return jax.jit(jax.vmap(run_one))


def search(max_len: int, *, vocab_size: int, restarts: int, steps: int, seed: int,
           lr: float = 0.1) -> dict:
  """Maximises each objective for one ``T``; returns the best value and instance per objective."""
  import jax
  import jax.numpy as jnp

  with jax.enable_x64(True):
    key = jax.random.key(seed * 1000 + max_len)
    n = restarts * len(OBJECTIVES)
    scales = jnp.tile(jnp.array([1.0, 3.0, 6.0]), n)[:n]
    logits0 = scales[:, None, None, None] * jax.random.normal(
        key, (n, 2, vocab_size + 1, vocab_size), jnp.float64)
    which = jnp.repeat(jnp.arange(len(OBJECTIVES)), restarts)
    fixed = which == 1
    best_val, best_logits = _search_fn(max_len, steps, lr)(logits0, which, fixed)
    out = {}
    for j, name in enumerate(OBJECTIVES):
      vals = np.asarray(best_val[j * restarts:(j + 1) * restarts])
      vals = np.where(np.isfinite(vals), vals, -np.inf)
      i = int(np.argmax(vals))
      logits = best_logits[j * restarts + i]
      p, q = _lms_from_logits(logits, jnp.asarray(name == "fixed"))
      out[name] = {"value": float(vals[i]), "p": p, "q": q}
    return out


def _recheck(p, q, max_len):
  """Recomputes alpha, eps, L_p of a found instance eagerly (validated inputs)."""
  from dspec_theory.markov import markov_lm, sequence_stats

  p = markov_lm(np.asarray(p.init), np.asarray(p.trans), EOS)
  q = markov_lm(np.asarray(q.init), np.asarray(q.trans), EOS)
  s = sequence_stats(p, q, max_len)
  theorem, single = ratios_from_stats(s, max_len)
  return p, q, s, float(theorem), float(single)


def _instance_json(p, q, s, max_len):
  return {
      "T": max_len,
      "p_init": np.asarray(p.init).tolist(), "p_trans": np.asarray(p.trans).tolist(),
      "q_init": np.asarray(q.init).tolist(), "q_trans": np.asarray(q.trans).tolist(),
      "alpha": float(s.alpha), "eps": float(s.eps), "L_p": float(s.expected_len),
  }


def _fmt_matrix(m) -> str:
  return "[" + "; ".join(" ".join(f"{x:.3f}" for x in row) for row in np.atleast_2d(m)) + "]"


def check_tightness(ctx: Context) -> Outcome:
  """Worst cases of Eq. 4 by gradient search, T = 2..32, and the exact tight family."""
  import jax

  from dspec_theory.enumeration import sequence_stats_by_enumeration
  from dspec_theory.markov import markov_lm, sequence_stats
  from proofs_checks.tiny_models import markov_fn

  led = Ledger()
  ts = [2, 3] if ctx.quick else list(range(2, 33))
  restarts, steps = (8, 200) if ctx.quick else (24, 600)
  vocab = 3
  rows, instances = [], {}
  path = os.path.join(ctx.out_dir, "tightness_instances.json")

  def one_t(T):
    """Search, recheck and the tight family for one T (runs in a worker thread)."""
    with jax.enable_x64(True):
      res = search(T, vocab_size=vocab, restarts=restarts, steps=steps, seed=ctx.seed)
      row, inst = {"T": T}, {}
      for name in OBJECTIVES:
        p, q, s, theorem, single = _recheck(res[name]["p"], res[name]["q"], T)
        row[name] = single if name == "single" else theorem
        row[name + "_alpha"] = float(s.alpha)
        row[name + "_eps"] = float(s.eps)
        row[name + "_L_p"] = float(s.expected_len)
        inst[name] = _instance_json(p, q, s, T)
      # The exact tight family: 1 - alpha = T eps, ratio exactly 1.
      pi, pt, qi, qt = tight_fixed_length_family(T)
      fam = sequence_stats(markov_lm(_f(pi), _f(pt), EOS), markov_lm(_f(qi), _f(qt), EOS), T)
      row["family"] = float(ratios_from_stats(fam, T)[0])
      row["family_exact"] = None
      if T <= 6:
        ex = sequence_stats_by_enumeration(markov_fn(pi, pt), markov_fn(qi, qt), 3, EOS, T)
        row["family_exact"] = (1 - ex.alpha) * ex.expected_len / (T * T * ex.eps)
      return row, inst

  # XLA compiles one search per T (the cost that dominates); two threads overlap them.
  with ThreadPoolExecutor(max_workers=2) as pool:
    results = pool.map(one_t, ts)
    if ctx.progress:
      from tqdm import tqdm

      results = tqdm(results, total=len(ts), leave=False, desc="tightness search")
    for row, inst in results:
      rows.append(row)
      for name, data in inst.items():
        instances.setdefault(name, {})[row["T"]] = data
      with open(path + ".tmp", "w") as f:  # partial results survive an interruption
        json.dump({"rows": _jsonable(rows), "instances": instances}, f)
      os.replace(path + ".tmp", path)
  tol = 1e-9
  worst_theorem = max(r["theorem"] for r in rows)
  worst_fixed = max(r["fixed"] for r in rows)
  led.check(worst_theorem <= 1 + tol,
            "no instance found with (1 - alpha) / (T (T / L_p) eps) > 1 (Eq. 4 per input)",
            f"largest ratio found {worst_theorem:.9f} over T = {ts[0]}..{ts[-1]}")
  led.check(worst_fixed <= 1 + tol, "fixed length: no instance with 1 - alpha > T eps",
            f"largest (1 - alpha) / (T eps) found {worst_fixed:.9f}")
  fam_exact = [r["family_exact"] for r in rows if r["family_exact"] is not None]
  led.check(all(x == 1 for x in fam_exact) and all(abs(r["family"] - 1) < 1e-12 for r in rows),
            "tight family: 1 - alpha = T eps exactly (ratio 1) for every T",
            f"exact rationals for T <= 6, float64 sequence_stats for all T; so the factor T of Eq. 4 "
            f"is attained and cannot be lowered")
  t2 = [r["single"] for r in rows if r["T"] == 2]
  led.check(not t2 or t2[0] <= 1 + tol, "T = 2: single-input (1 - alpha) / (T eps) <= 1",
            f"largest found {t2[0]:.9f}" if t2 else "")
  over = [r for r in rows if r["single"] > 1 + 1e-6]
  if over:
    first = min(over, key=lambda r: r["T"])
    led.finding(
        "single-input (1 - alpha) / (T eps) > 1 exists (so Eq. 4's product form fails for some input law)",
        f"first at T = {first['T']} (ratio {first['single']:.4f}); at T = {rows[-1]['T']}: {rows[-1]['single']:.3f}",
        "")
  # Growth: fixed-length worst case (1 - alpha)/eps vs T.
  t_arr = np.array([r["T"] for r in rows], float)
  growth = np.array([r["fixed"] * r["T"] for r in rows])
  slope = float(np.polyfit(np.log(t_arr), np.log(growth), 1)[0]) if len(rows) > 2 else float("nan")
  led.check(True, "observed growth of max (1 - alpha) / eps with T (fixed length)",
            f"log-log slope {slope:.3f} (1 = linear in T)")
  led.data.update(rows=_jsonable(rows), growth_slope=slope, search={"vocab": vocab,
                  "restarts_per_objective": restarts, "adam_steps": steps})
  table = ["| T | max (1-α)/(T (T/L_p) ε) | its α, ε, L_p | max fixed-length (1-α)/(T ε) |"
           " max single-input (1-α)/(T ε) | tight family (exact) |", "| --- | --- | --- | --- | --- | --- |"]
  for r in rows:
    fam = "1 (exact)" if r["family_exact"] == 1 else f"{r['family']:.12f}"
    table.append(f"| {r['T']} | {r['theorem']:.6f} | {r['theorem_alpha']:.4f}, {r['theorem_eps']:.2e},"
                 f" {r['theorem_L_p']:.2f} | {r['fixed']:.6f} | {r['single']:.4f} | {fam} |")
  led.section("**Largest ratios found by the gradient search** (V = 3 Markov chains, "
              f"{restarts} restarts per objective, {steps} Adam steps; every instance is in "
              "`tightness_instances.json`):\n\n" + "\n".join(table))
  example = instances["theorem"][ts[-1]]
  led.section(
      f"**Worst instance found for T = {ts[-1]}** (token 0 = EOS): target init "
      f"{_fmt_matrix(example['p_init'])}, trans {_fmt_matrix(example['p_trans'])}; draft init "
      f"{_fmt_matrix(example['q_init'])}, trans {_fmt_matrix(example['q_trans'])}; "
      f"alpha = {example['alpha']:.6f}, eps = {example['eps']:.3e}, L_p = {example['L_p']:.3f}.")
  led.section(
      "**Is the factor T necessary? Yes.** The family "
      "`proofs_checks.counterexamples.tight_fixed_length_family` (target starts with a or b, "
      "w.p. 1 - d and d, and repeats it; the draft always emits a) has 1 - alpha = d and "
      "eps = d / T exactly, so 1 - alpha = T eps: the bound of Eq. 4 is attained with equality "
      "for every T (and every d), and 1 - alpha grows linearly in T at fixed eps. The search "
      f"approaches the same value from random starts (fixed-length growth of max (1-α)/ε: "
      f"log-log slope {slope:.3f}); no instance exceeds it, in line with the per-input proof. "
      "For variable lengths the per-input ratio (1-α)/(T ε) without the T/L_p factor reaches "
      "well above 1 (last column), which is why Eq. 4 needs T/L_p(x) inside the expectation.")
  fig = _plot_tightness(rows, ctx.out_dir)
  if fig:
    led.figures.append(fig)
  return led.outcome(f"max ratio {worst_theorem:.6f} <= 1 for T = {ts[0]}..{ts[-1]}; "
                     "factor T attained exactly by a family")


def _f(x):
  return np.array([[float(v) for v in r] for r in x]) if isinstance(x[0], list) else np.array(
      [float(v) for v in x])


def _jsonable(rows):
  out = []
  for r in rows:
    out.append({k: (float(v) if isinstance(v, Fraction) else v) for k, v in r.items()})
  return out


def _plot_tightness(rows, out_dir):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  t = [r["T"] for r in rows]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  ax = axes[0]
  ax.plot(t, [r["theorem"] for r in rows], "o-", label="max (1-α)/(T·(T/L_p)·ε)  [Eq. 4 slack]")
  ax.plot(t, [r["fixed"] for r in rows], "s--", label="fixed length: max (1-α)/(T·ε)")
  ax.plot(t, [r["family"] for r in rows], "k:", label="tight family (exactly 1)")
  ax.set_xlabel("T")
  ax.set_ylabel("ratio")
  low = min(min(r["theorem"] for r in rows), min(r["fixed"] for r in rows))
  ax.set_ylim(min(0.95, low - 0.005), 1.005)
  ax.legend(fontsize=8, loc="lower left")
  ax.set_title("Theorem 4.1: worst case found / bound")
  ax = axes[1]
  ax.plot(t, [r["single"] for r in rows], "o-", label="max single-input (1-α)/(T·ε)")
  ax.plot(t, [x - 1 for x in t], "k:", label="T - 1")
  ax.axhline(1, color="gray", lw=0.8)
  ax.set_xlabel("T")
  ax.set_ylabel("ratio")
  ax.legend(fontsize=8)
  ax.set_title("product form of Eq. 4 holds iff this is <= 1")
  fig.tight_layout()
  name = "tightness.png"
  fig.savefig(os.path.join(out_dir, name), dpi=110)
  plt.close(fig)
  return name


# ---------------------------------------------------------------------------
# Check 10: i.i.d. tau(alpha) vs exact finite-gamma block efficiency.


def _iid_control(T):
  """No EOS, TVD = 0.3 in every context: acceptances really are i.i.d. (alpha = 0.7)."""
  from dspec_theory.markov import markov_lm

  p_row = np.array([0.0, 0.5, 0.5])
  q_row = np.array([0.0, 0.8, 0.2])
  return markov_lm(p_row, np.tile(p_row, (3, 1)), EOS), markov_lm(q_row, np.tile(q_row, (3, 1)), EOS)


def check_tau_iid(ctx: Context) -> Outcome:
  """Relative error of ``tau(alpha, gamma)`` (i.i.d.) vs exact ``sd_stats`` by gamma."""
  import jax

  from dspec_theory.block import block_efficiency
  from dspec_theory.enumeration import speculative_distribution
  from dspec_theory.markov import (
      markov_lm,
      next_token_fn,
      perturbed_markov_lm,
      random_markov_lm,
      sd_stats,
      sequence_stats,
  )

  led = Ledger()
  gammas = (1, 2) if ctx.quick else (1, 2, 4, 8)
  ts = (3,) if ctx.quick else (4, 8, 16, 32)
  groups: dict[str, list] = {"random": [], "worst-case (search)": [], "i.i.d. control": []}
  with jax.enable_x64(True):
    path = os.path.join(ctx.out_dir, "tightness_instances.json")
    found = {}
    if os.path.exists(path):
      with open(path) as f:
        found = json.load(f).get("instances", {})
    for T in ts:
      for name in OBJECTIVES:
        inst = found.get(name, {}).get(str(T))
        if inst:
          p = markov_lm(inst["p_init"], inst["p_trans"], EOS)
          q = markov_lm(inst["q_init"], inst["q_trans"], EOS)
          groups["worst-case (search)"].append((f"{name} T={T}", p, q, T))
      n_rand = 3 if ctx.quick else 6
      for i in range(n_rand):
        key = jax.random.key(ctx.seed * 7919 + T * 101 + i)
        k1, k2 = jax.random.split(key)
        vocab = 3  # one shape: sd_stats compiles once per (T, gamma)
        p = random_markov_lm(k1, vocab, concentration=0.5 + i % 2, mean_length=float(2 + T))
        q = perturbed_markov_lm(k2, p, [0.3, 1.0, 3.0][i % 3])
        groups["random"].append((f"random T={T} #{i}", p, q, T))
    for T in ((3,) if ctx.quick else (32, 512)):  # quick: shares the compilations of T = 3
      p, q = _iid_control(T)
      groups["i.i.d. control"].append((f"iid control T={T}", p, q, T))
    results = {g: {gm: [] for gm in gammas} for g in groups}
    tasks = [(g, label, p, q, T) for g, insts in groups.items() for label, p, q, T in insts]
    by_t: dict[int, list] = {}
    for task in tasks:
      by_t.setdefault(task[-1], []).append(task)

    def one_t(batch):
      """Every instance of one T (sd_stats compiles once per (T, gamma)); a worker thread."""
      out = []
      with jax.enable_x64(True):
        for g, label, p, q, T in batch:
          alpha = float(sequence_stats(p, q, T).alpha)
          for gm in gammas:
            exact = float(sd_stats(p, q, T, gm).block_efficiency)
            iid = float(block_efficiency(alpha, gm))
            out.append((g, gm, ((iid - exact) / exact, label, alpha, exact, iid)))
      return out

    with ThreadPoolExecutor(max_workers=2) as pool:
      for out in pool.map(one_t, list(by_t.values())):
        for g, gm, row in out:
          results[g][gm].append(row)
    # Independent check of the exact value on one small instance: enumeration of Algorithm A.1.
    p, q = groups["random"][0][1], groups["random"][0][2]
    T = groups["random"][0][3]
    worst = 0.0
    for gm in (1, 2):
      en = speculative_distribution(next_token_fn(p), next_token_fn(q), p.vocab_size, EOS, T, gm)
      worst = max(worst, abs(float(en.block_efficiency) - float(sd_stats(p, q, T, gm).block_efficiency)))
    led.check(worst < 1e-12, f"sd_stats block efficiency = enumeration of Algorithm A.1 (T = {T}, gamma = 1, 2)",
              f"max abs difference {worst:.1e}")
  lines = ["| gamma | " + " | ".join(f"{g}: median / max abs rel. error" for g in groups) + " |",
           "| --- |" + " --- |" * len(groups)]
  for gm in gammas:
    cells = []
    for g in groups:
      errs = np.abs([r[0] for r in results[g][gm]])
      cells.append(f"{np.median(errs):.2%} / {np.max(errs):.2%}" if len(errs) else "-")
    lines.append(f"| {gm} | " + " | ".join(cells) + " |")
  signed = {g: float(np.mean([r[0] for gm in gammas for r in results[g][gm]]))
            for g in groups if any(results[g][gm] for gm in gammas)}
  worst_row = max((r for gm in gammas for r in results["worst-case (search)"][gm]),
                  key=lambda r: abs(r[0]), default=None)
  if not ctx.quick:
    control = [abs(r[0]) for gm in gammas for r in results["i.i.d. control"][gm]
               if r[1].endswith("T=512")]
    led.check(max(control) < 0.02,
              "i.i.d. control (constant TVD, no EOS, T = 512): formula within 2% (finite-T cut only)",
              f"max abs relative error {max(control):.3%}")
  led.section(
      "**Relative error (tau_iid - tau_exact) / tau_exact**, tau_iid = (1 - alpha^(gamma+1)) / "
      "(1 - alpha) with alpha the exact sequence acceptance rate (Eq. 1) and tau_exact from "
      "`sd_stats` (exact Algorithm A.1, finite T, EOS ends a block). Random pairs: "
      f"`random_markov_lm` + `perturbed_markov_lm`, T in {list(ts)}; worst cases: the "
      "instances of check 9 at the same T. Mean signed error: "
      + ", ".join(f"{g} {v:+.2%}" for g, v in signed.items()) + ".\n\n" + "\n".join(lines))
  if worst_row:
    led.section(f"Largest deviation: {worst_row[1]}: alpha = {worst_row[2]:.4f}, exact tau = "
                f"{worst_row[3]:.4f}, i.i.d. tau = {worst_row[4]:.4f} ({worst_row[0]:+.1%}). The "
                "i.i.d. formula assumes every draft is accepted with the same probability; "
                "rejections that cluster in rare contexts (the worst cases) or sequences that end "
                "mid-block break that assumption, while the control with constant acceptance "
                "matches up to the cut at T.")
  led.data.update(table={g: {str(gm): [r[0] for r in results[g][gm]] for gm in gammas}
                         for g in groups}, mean_signed=signed)
  fig = _plot_tau(results, gammas, ctx.out_dir)
  if fig:
    led.figures.append(fig)
  return led.outcome("i.i.d. tau vs exact finite-gamma tau tabulated by gamma")


def _plot_tau(results, gammas, out_dir):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(6, 4))
  for g, marker in zip(results, "o^s"):
    if not all(results[g][gm] for gm in gammas):
      continue
    med = [np.median(np.abs([r[0] for r in results[g][gm]])) for gm in gammas]
    mx = [np.max(np.abs([r[0] for r in results[g][gm]])) for gm in gammas]
    line, = ax.plot(gammas, med, marker + "-", label=f"{g} (median)")
    ax.plot(gammas, mx, marker + ":", color=line.get_color(), label=f"{g} (max)")
  ax.set_xlabel("gamma")
  ax.set_ylabel("|tau_iid - tau_exact| / tau_exact")
  ax.set_yscale("log")
  ax.legend(fontsize=7)
  ax.set_title("i.i.d. block-efficiency formula vs exact")
  fig.tight_layout()
  name = "tau_iid_error.png"
  fig.savefig(os.path.join(out_dir, name), dpi=110)
  plt.close(fig)
  return name
