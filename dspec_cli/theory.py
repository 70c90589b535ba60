"""``dspec theory``: exact speculative-decoding numbers without training anything.

  dspec theory markov --vocab 8 --max-len 16 --gamma 3 --seed 0 [--lenience sq:0.5] [--json]
  dspec theory markov --vocab 6 --gamma 4 --verification token,block
  dspec theory block-gain --vocab 4 --max-len 16 --gamma 4 --strengths 0.25,0.5,1,2 --seeds 5
  dspec theory tau --alpha 0.8 --gamma 5 --c 0.05 [--json]
  dspec theory tau --tau 2.31 --gamma 3
  dspec theory convert --num-drafts N --num-draft-tokens M --num-accepted K [--per-position a,b,c]
"""

from __future__ import annotations

import argparse
import sys


def parse_gammas(text: str) -> list[int]:
  """'3' -> [1, 2, 3]; '3,5,7' -> [3, 5, 7]; '2-4' -> [2, 3, 4]."""
  text = text.strip()
  try:
    if "," in text:
      values = [int(x) for x in text.split(",") if x.strip()]
    elif "-" in text:
      lo, hi = (int(x) for x in text.split("-", 1))
      values = list(range(lo, hi + 1))
    else:
      values = list(range(1, int(text) + 1))
  except ValueError:
    raise ValueError(f"gamma must look like '3', '3,5,7' or '1-7'; got {text!r}") from None
  if not values or min(values) < 1:
    raise ValueError(f"gamma values must be >= 1; got {text!r}")
  return values


def add_parser(subparsers) -> None:
  theory = subparsers.add_parser(
      "theory", help="exact SD statistics (Markov LMs) and the tau / speedup formulas",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = theory.add_subparsers(dest="theory_command", metavar="WHAT")
  sub.required = True

  m = sub.add_parser("markov", help="exact alpha, eps, Theorem 4.1 bound and tau for a Markov pair")
  m.add_argument("--vocab", type=int, default=8, help="vocabulary size V (default 8)")
  m.add_argument("--max-len", type=int, default=16, help="maximum output length T (default 16)")
  m.add_argument("--gamma", default="7",
                 help="block sizes: N means 1..N, or a list '3,5,7' or range '1-7' (default 7)")
  m.add_argument("--seed", type=int, default=0, help="seed for the random target and draft")
  m.add_argument("--eos", type=int, default=0, help="EOS token id (default 0)")
  m.add_argument("--mean-length", type=float, default=None,
                 help="give every row EOS probability 1/mean-length (default: EOS drawn like any token)")
  m.add_argument("--concentration", type=float, default=0.5, help="Dirichlet concentration of rows")
  m.add_argument("--strength", type=float, default=0.7,
                 help="log-space noise scale of the draft around the target (default 0.7)")
  m.add_argument("--lenience", default=None, help="lossy SD, e.g. sq:0.5, lin:0.3, exp:0.5")
  m.add_argument("--c", type=float, default=0.05, help="draft/target latency ratio for speedups")
  m.add_argument("--load", default=None,
                 help=".npz with p_init, p_trans, q_init, q_trans, eos (instead of random chains)")
  m.add_argument("--save", default=None, help="save the pair used to this .npz")
  m.add_argument("--mc", type=int, default=0,
                 help="also run N Monte Carlo speculative decodes per gamma and show their means")
  m.add_argument("--verification", default="token",
                 help="'token' (Algorithm A.1), 'block' (Sun et al. 2025) or 'token,block' side by"
                      " side (default token)")
  m.add_argument("--json", action="store_true", help="print JSON instead of a table")
  m.set_defaults(func=run_markov)

  b = sub.add_parser("block-gain",
                     help="exact gain of block over token verification on random Markov pairs")
  b.add_argument("--vocab", type=int, default=4, help="vocabulary size V (default 4)")
  b.add_argument("--max-len", type=int, default=16, help="maximum output length T (default 16)")
  b.add_argument("--gamma", default="4", help="block sizes, as for 'markov' (default 4: 1..4)")
  b.add_argument("--strengths", default="0.25,0.5,1,2,4",
                 help="draft noise scales (larger: lower alpha; default 0.25,0.5,1,2,4)")
  b.add_argument("--seeds", type=int, default=5, help="random pairs per strength (default 5)")
  b.add_argument("--mean-length", type=float, default=8.0,
                 help="EOS probability 1/mean-length in every row (default 8)")
  b.add_argument("--concentration", type=float, default=0.5, help="Dirichlet concentration of rows")
  b.add_argument("--json", action="store_true", help="print JSON instead of a table")
  b.set_defaults(func=run_block_gain)

  t = sub.add_parser("tau", help="tau(alpha, gamma), speedup tau/(c gamma + 1), best gamma, or alpha from tau")
  group = t.add_mutually_exclusive_group(required=True)
  group.add_argument("--alpha", type=float, help="acceptance rate in [0, 1]")
  group.add_argument("--tau", type=float, help="measured block efficiency, to invert to alpha")
  t.add_argument("--gamma", type=int, required=True, help="block size")
  t.add_argument("--c", type=float, default=None, help="draft/target latency ratio")
  t.add_argument("--max-gamma", type=int, default=64, help="largest gamma searched for the best one")
  t.add_argument("--json", action="store_true", help="print JSON")
  t.set_defaults(func=run_tau)

  from dspec_cli import theory_distill

  theory_distill.add_subcommand(sub)

  from dspec_cli import theory_counters

  theory_counters.add_subcommand(sub)


def _load_pair(args):
  import jax
  import numpy as np

  from dspec_theory import markov as mk

  if args.load:
    import zipfile

    try:
      data = np.load(args.load, allow_pickle=False)
      files = set(data.files)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
      why = err.strerror if isinstance(err, OSError) and err.strerror else type(err).__name__
      raise ValueError(f"--load: cannot read {args.load!r} as a .npz archive ({why})") from None
    except AttributeError:   # np.load returned a plain array: a .npy file
      raise ValueError(f"--load: {args.load!r} is a .npy array, not a .npz archive") from None
    missing = {"p_init", "p_trans", "q_init", "q_trans", "eos"} - files
    if missing:
      raise ValueError(f"--load: {args.load} lacks {sorted(missing)}")
    eos_arr = np.asarray(data["eos"])
    if eos_arr.ndim != 0 or eos_arr.dtype.kind not in "iu":
      raise ValueError(f"--load: eos must be an integer scalar; got {eos_arr.tolist()!r} "
                       f"(dtype {eos_arr.dtype}, shape {eos_arr.shape})")
    eos = int(eos_arr)
    return (mk.markov_lm(data["p_init"], data["p_trans"], eos),
            mk.markov_lm(data["q_init"], data["q_trans"], eos))
  k1, k2 = jax.random.split(jax.random.key(args.seed))
  p = mk.random_markov_lm(k1, args.vocab, args.eos, concentration=args.concentration,
                          mean_length=args.mean_length)
  q = mk.perturbed_markov_lm(k2, p, args.strength)
  return p, q


def parse_verifications(text: str) -> tuple[str, ...]:
  """'token' / 'block' / 'token,block' -> a tuple of verification names (checked)."""
  names = tuple(x.strip() for x in str(text).split(",") if x.strip())
  if not names or len(set(names)) != len(names) or set(names) - {"token", "block"}:
    raise ValueError(f"--verification must be 'token', 'block' or 'token,block'; got {text!r}")
  return names


def markov_report(p, q, max_len: int, gammas: list[int], lenience=None, c: float = 0.05,
                  mc: int = 0, seed: int = 0, verifications=("token",)) -> dict:
  """All exact numbers for one Markov pair, as a plain dict (used by the CLI and the demo).

  Token verification's numbers are always there (``tau_exact``, ...); with
  ``"block" in verifications`` each gamma also gets block verification's
  (``tau_exact_block``, ``expected_target_calls_block``,
  ``expected_accepted_block``, ``speedup_exact_block``, Monte Carlo with
  ``_block``) and ``block_gain = tau_exact_block / tau_exact - 1``.
  """
  import jax
  import numpy as np

  from dspec_cli import theory_counters
  from dspec_theory import block, markov as mk, sampler

  seq = mk.sequence_stats(p, q, max_len)
  alpha = float(seq.alpha)
  if "block" in verifications and lenience is not None:
    raise ValueError("--lenience is defined for token verification only: drop it or drop 'block'"
                     " from --verification")
  rows = []
  for gamma in gammas:
    sd = mk.sd_stats(p, q, max_len, gamma, lenience)
    tau = float(sd.block_efficiency)
    row = {
        "gamma": gamma,
        "tau_exact": tau,
        "tau_iid": float(block.block_efficiency(alpha, gamma)),
        "expected_target_calls": float(sd.expected_target_calls),
        "expected_len": float(sd.expected_len),
        "speedup_exact": float(block.speedup_from_tau(tau, gamma, c)),
        "speedup_iid": float(block.expected_speedup(alpha, gamma, c)),
        "per_position": theory_counters.markov_positions(p, q, max_len, gamma, lenience, alpha),
    }
    if mc:
      res = sampler.simulate_markov(p, q, max_len, gamma, lenience,
                                    key=jax.random.key(seed + 1000 * gamma), num_samples=mc)
      calls = np.asarray(res.target_calls, np.float64)
      length = np.asarray(res.length, np.float64)
      row["tau_monte_carlo"] = float(length.mean() / calls.mean())
      row["target_calls_monte_carlo"] = float(calls.mean())
      row["target_calls_monte_carlo_se"] = float(calls.std() / np.sqrt(mc))
    if "block" in verifications:
      row.update(_block_row(p, q, max_len, gamma, c, mc, seed, tau))
    rows.append(row)
  best = block.best_gamma(alpha, c)
  return {
      "vocab_size": p.vocab_size,
      "max_len": max_len,
      "eos": p.eos,
      "lenience": None if lenience is None else str(lenience),
      "verifications": list(verifications),
      "c": c,
      "alpha": alpha,
      "expected_len_p": float(seq.expected_len),
      "expected_len_q": float(seq.expected_len_q),
      "eps": float(seq.eps),
      "bound": float(seq.bound),
      "best_gamma_iid": int(best.gamma),
      "best_speedup_iid": float(best.speedup),
      "per_gamma": rows,
  }


def _block_row(p, q, max_len: int, gamma: int, c: float, mc: int, seed: int,
               tau_token: float) -> dict:
  """Block verification's exact (and Monte Carlo) numbers for one gamma, ``_block``-suffixed."""
  import jax
  import numpy as np

  from dspec_theory import block, markov as mk, sampler

  sd = mk.sd_stats(p, q, max_len, gamma, verification="block")
  tau = float(sd.block_efficiency)
  row = {
      "tau_exact_block": tau,
      "expected_target_calls_block": float(sd.expected_target_calls),
      "expected_accepted_block": float(sd.expected_accepted),
      "speedup_exact_block": float(block.speedup_from_tau(tau, gamma, c)),
      "block_gain": tau / tau_token - 1.0,
  }
  if mc:
    res = sampler.simulate_markov(p, q, max_len, gamma, key=jax.random.key(seed + 1000 * gamma),
                                  num_samples=mc, verification="block")
    calls = np.asarray(res.target_calls, np.float64)
    row["tau_monte_carlo_block"] = float(np.asarray(res.length, np.float64).mean() / calls.mean())
    row["target_calls_monte_carlo_block"] = float(calls.mean())
    row["target_calls_monte_carlo_se_block"] = float(calls.std() / np.sqrt(mc))
  return row


def block_gain_report(vocab: int, max_len: int, gammas: list[int], strengths: list[float],
                      seeds: int, mean_length: float | None = 8.0,
                      concentration: float = 0.5) -> dict:
  """Exact gain of block over token verification across draft quality and gamma.

  For each draft noise scale ``s`` (:func:`dspec_theory.markov.perturbed_markov_lm`)
  and seed, a random target (V tokens, EOS 0) and its perturbed draft give
  the exact ``alpha`` (Eq. 1) and, per gamma, the exact block efficiencies of
  token and block verification (:func:`dspec_theory.markov.sd_stats`).
  ``gain = tau_block / tau_token - 1``.

  Returns:
    ``{"settings": ..., "pairs": [per pair: strength, seed, alpha, per-gamma
    taus and gains], "summary": [per strength: mean alpha, per gamma mean /
    min / max gain]}``.
  """
  import jax
  import numpy as np

  from dspec_theory import markov as mk

  if seeds < 1:
    raise ValueError(f"--seeds must be >= 1; got {seeds}")
  if not strengths or min(strengths) < 0:
    raise ValueError(f"--strengths must be numbers >= 0; got {strengths}")
  pairs = []
  for strength in strengths:
    for seed in range(seeds):
      k1, k2 = jax.random.split(jax.random.key(seed))
      p = mk.random_markov_lm(k1, vocab, 0, concentration=concentration, mean_length=mean_length)
      q = mk.perturbed_markov_lm(k2, p, strength)
      entry = {"strength": strength, "seed": seed,
               "alpha": float(mk.sequence_stats(p, q, max_len).alpha), "per_gamma": []}
      for gamma in gammas:
        tok = float(mk.sd_stats(p, q, max_len, gamma).block_efficiency)
        blk = float(mk.sd_stats(p, q, max_len, gamma, verification="block").block_efficiency)
        entry["per_gamma"].append({"gamma": gamma, "tau_token": tok, "tau_block": blk,
                                   "gain": blk / tok - 1.0})
      pairs.append(entry)
  summary = []
  for strength in strengths:
    group = [e for e in pairs if e["strength"] == strength]
    row = {"strength": strength, "mean_alpha": float(np.mean([e["alpha"] for e in group])),
           "per_gamma": []}
    for i, gamma in enumerate(gammas):
      gains = [e["per_gamma"][i]["gain"] for e in group]
      row["per_gamma"].append({"gamma": gamma, "mean_gain": float(np.mean(gains)),
                               "min_gain": float(np.min(gains)), "max_gain": float(np.max(gains))})
    summary.append(row)
  return {"settings": {"vocab_size": vocab, "max_len": max_len, "gammas": list(gammas),
                       "strengths": list(strengths), "seeds": seeds, "mean_length": mean_length,
                       "concentration": concentration},
          "pairs": pairs, "summary": summary}


def run_block_gain(args) -> int:
  from dspec_cli._table import dumps, format_table

  _enable_x64()
  gammas = parse_gammas(args.gamma)
  try:
    strengths = [float(x) for x in args.strengths.split(",") if x.strip()]
  except ValueError:
    raise ValueError(f"--strengths must be comma-separated numbers; got {args.strengths!r}") from None
  if args.max_len < 1:
    raise ValueError(f"--max-len must be >= 1; got {args.max_len}")
  if args.vocab < 2:
    raise ValueError(f"--vocab must be >= 2; got {args.vocab}")
  report = block_gain_report(args.vocab, args.max_len, gammas, strengths, args.seeds,
                             args.mean_length, args.concentration)
  if args.json:
    print(dumps(report))
    return 0
  st = report["settings"]
  print(f"Exact gain of block over token verification, tau_block / tau_token - 1 (percent):"
        f" V={st['vocab_size']}, T={st['max_len']}, {st['seeds']} random pairs per draft noise"
        f" scale; mean [min, max] over pairs")
  headers = ["noise", "mean alpha"] + [f"gamma={g}" for g in gammas]
  rows = []
  for row in report["summary"]:
    rows.append([row["strength"], row["mean_alpha"]] + [
        f"{100 * c['mean_gain']:.2f} [{100 * c['min_gain']:.2f}, {100 * c['max_gain']:.2f}]"
        for c in row["per_gamma"]])
  print(format_table(headers, rows))
  return 0


def _enable_x64() -> None:
  import jax

  jax.config.update("jax_enable_x64", True)  # exact numbers: float64 throughout this command


def run_markov(args) -> int:
  import numpy as np

  from dspec_cli._table import dumps, format_table
  from dspec_theory.lenience import parse_lenience

  _enable_x64()
  lenience = parse_lenience(args.lenience)
  gammas = parse_gammas(args.gamma)
  if args.max_len < 1:
    raise ValueError(f"--max-len must be >= 1; got {args.max_len}")
  if args.mc < 0:
    raise ValueError(f"--mc must be >= 0 (Monte Carlo decodes; 0 skips); got {args.mc}")
  if args.save:   # checked before computing
    from dspec_models.training.rundir import require_writable_file

    save = args.save if str(args.save).endswith(".npz") else f"{args.save}.npz"
    require_writable_file(save, "--save")
  p, q = _load_pair(args)
  if args.save:
    np.savez(args.save, p_init=np.asarray(p.init), p_trans=np.asarray(p.trans),
             q_init=np.asarray(q.init), q_trans=np.asarray(q.trans), eos=p.eos)
  verifications = parse_verifications(args.verification)
  if "block" in verifications and lenience is not None:
    raise ValueError("--lenience is defined for token verification only: drop it or drop 'block'"
                     " from --verification")
  report = markov_report(p, q, args.max_len, gammas, lenience, args.c, args.mc, args.seed,
                         verifications)
  if args.json:
    print(dumps(report))
    return 0
  print(f"Markov target/draft: V={report['vocab_size']}, T={report['max_len']}, eos={report['eos']},"
        f" lenience={report['lenience'] or 'none (lossless)'}")
  print(f"  alpha (Eq. 1, gamma=inf)      {report['alpha']:.6f}")
  print(f"  L_p = E|y|, y ~ target        {report['expected_len_p']:.6f}")
  print(f"  eps = on-policy TVD loss      {report['eps']:.6f}")
  print(f"  Theorem 4.1 bound on alpha    {report['bound']:.6f}"
        f"   (1 - T (T/L_p) eps; {'holds' if report['alpha'] >= report['bound'] else 'VIOLATED'})")
  print()
  headers = ["gamma", "tau exact", "tau iid", "iid - exact", "E[calls]", "E|y|",
             f"speedup(c={report['c']:g})"]
  if args.mc:
    headers += ["tau MC", "calls MC +- se"]
  rows = []
  for r in report["per_gamma"]:
    row = [r["gamma"], r["tau_exact"], r["tau_iid"], r["tau_iid"] - r["tau_exact"],
           r["expected_target_calls"], r["expected_len"], r["speedup_exact"]]
    if args.mc:
      row += [r["tau_monte_carlo"],
              f"{r['target_calls_monte_carlo']:.4f} +- {r['target_calls_monte_carlo_se']:.4f}"]
    rows.append(row)
  if "block" in report["verifications"]:
    only_block = report["verifications"] == ["block"]
    if only_block:
      headers, rows = ["gamma"], [[r["gamma"]] for r in report["per_gamma"]]
    else:
      headers = headers + ["tau block", "block gain"]
      rows = [row + [r["tau_exact_block"], f"{100 * r['block_gain']:+.2f}%"]
              for row, r in zip(rows, report["per_gamma"])]
    headers = headers + (["tau block", "E[calls] block", f"speedup block(c={report['c']:g})"]
                         if only_block else ["E[calls] block"])
    for row, r in zip(rows, report["per_gamma"]):
      if only_block:
        row += [r["tau_exact_block"], r["expected_target_calls_block"], r["speedup_exact_block"]]
      else:
        row += [r["expected_target_calls_block"]]
      if args.mc:
        row += [r["tau_monte_carlo_block"],
                f"{r['target_calls_monte_carlo_block']:.4f} +- "
                f"{r['target_calls_monte_carlo_se_block']:.4f}"]
    if args.mc:
      headers += ["tau MC block", "calls MC block +- se"]
  print(format_table(headers, rows))
  from dspec_cli.theory_counters import format_markov_positions

  print("\n" + format_markov_positions(report))
  if report["lenience"]:
    print("\n(lossy SD: tau iid uses the lossless alpha; the exact columns use the lenience)")
  print(f"\nbest gamma by the iid model at c={report['c']:g}: {report['best_gamma_iid']}"
        f" (speedup {report['best_speedup_iid']:.3f}x)")
  return 0


def run_tau(args) -> int:
  from dspec_cli._table import dumps, format_table
  from dspec_theory import block

  _enable_x64()
  gamma = args.gamma
  if args.tau is not None:
    alpha = float(block.alpha_from_tau(args.tau, gamma))
    out = {"tau": args.tau, "gamma": gamma, "alpha": alpha,
           "tau_predicted": {g: float(block.block_efficiency(alpha, g)) for g in (1, 2, 3, 5, 7, 10)}}
    if args.json:
      print(dumps(out))
    else:
      print(f"tau = {args.tau:g} at gamma = {gamma}  =>  alpha = {alpha:.6f} (i.i.d. model)")
      print(format_table(["gamma", "predicted tau"], list(out["tau_predicted"].items())))
    return 0
  tau = float(block.block_efficiency(args.alpha, gamma))
  out = {"alpha": args.alpha, "gamma": gamma, "tau": tau}
  if args.c is not None:
    out["c"] = args.c
    out["speedup"] = float(block.speedup_from_tau(tau, gamma, args.c))
    best = block.best_gamma(args.alpha, args.c, max_gamma=args.max_gamma)
    out["best_gamma"] = int(best.gamma)
    out["best_speedup"] = float(best.speedup)
  if args.json:
    print(dumps(out))
    return 0
  print(f"tau(alpha={args.alpha:g}, gamma={gamma}) = {tau:.6f}  [(1 - alpha^(gamma+1)) / (1 - alpha)]")
  if args.c is not None:
    print(f"expected speedup tau / (c gamma + 1) at c = {args.c:g}: {out['speedup']:.6f}x")
    print(f"best gamma in 1..{args.max_gamma}: {out['best_gamma']} (speedup {out['best_speedup']:.6f}x)")
  return 0


if __name__ == "__main__":
  from dspec_cli.main import main

  sys.exit(main(["theory", *sys.argv[1:]]))
