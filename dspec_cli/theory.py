"""``dspec theory``: exact speculative-decoding numbers without training anything.

  dspec theory markov --vocab 8 --max-len 16 --gamma 3 --seed 0 [--lenience sq:0.5] [--json]
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
  m.add_argument("--json", action="store_true", help="print JSON instead of a table")
  m.set_defaults(func=run_markov)

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


def markov_report(p, q, max_len: int, gammas: list[int], lenience=None, c: float = 0.05,
                  mc: int = 0, seed: int = 0) -> dict:
  """All exact numbers for one Markov pair, as a plain dict (used by the CLI and the demo)."""
  import jax
  import numpy as np

  from dspec_cli import theory_counters
  from dspec_theory import block, markov as mk, sampler

  seq = mk.sequence_stats(p, q, max_len)
  alpha = float(seq.alpha)
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
    rows.append(row)
  best = block.best_gamma(alpha, c)
  return {
      "vocab_size": p.vocab_size,
      "max_len": max_len,
      "eos": p.eos,
      "lenience": None if lenience is None else str(lenience),
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
  report = markov_report(p, q, args.max_len, gammas, lenience, args.c, args.mc, args.seed)
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
