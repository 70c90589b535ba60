"""The registry of checks run by ``dspec proofs``, in order."""

from __future__ import annotations

from proofs_checks.runner import Check, Context, Outcome


def _lazy(module: str, name: str):
  """A check function imported when it runs (keeps ``--help`` fast)."""

  def run(ctx: Context) -> Outcome:
    import importlib

    return getattr(importlib.import_module(f"proofs_checks.{module}"), name)(ctx)

  run.__name__ = name
  return run


CHECKS = (
    Check("1", "Cor. 3.6: sum min(p, q) = 1 - TVD (sympy)", _lazy("symbolic", "check_min_tvd")),
    Check("2", "Speculative sampling is lossless (sympy)", _lazy("symbolic", "check_lossless")),
    Check("3", "Lossy step: output law, eps = 1 limit (sympy)", _lazy("symbolic", "check_lossy")),
    Check("4", "Block efficiency tau(alpha, gamma) (sympy)",
          _lazy("symbolic", "check_block_efficiency")),
    Check("5", "JSD[beta]: limit KL and symmetry (sympy)", _lazy("symbolic", "check_jsd")),
    Check("6", "Lemma B.1, exact", _lazy("exact", "check_lemma_b1")),
    Check("7", "Lemma B.2 / B.3 proof steps via M(x,y,z)", _lazy("exact", "check_proof_steps")),
    Check("8", "Theorem 4.1 on random instances", _lazy("exact", "check_theorem")),
    Check("9", "Tightness of Theorem 4.1 (jax.grad search)",
          _lazy("tightness", "check_tightness")),
    Check("10", "i.i.d. tau(alpha) vs exact block efficiency", _lazy("tightness", "check_tau_iid")),
    Check("11", "Sampler conformance checker", _lazy("conformance_check", "check_conformance")),
)


def select(only: str | None) -> list[Check]:
  """The checks named in ``only`` (comma-separated ids, e.g. ``"1,6-8"``), or all."""
  if not only:
    return list(CHECKS)
  wanted: set[str] = set()
  for part in only.split(","):
    part = part.strip()
    if not part:
      continue
    if "-" in part:
      lo, _, hi = part.partition("-")
      try:
        wanted.update(str(i) for i in range(int(lo), int(hi) + 1))
      except ValueError:
        raise ValueError(f"--only: bad range {part!r}") from None
    else:
      wanted.add(part)
  known = {c.check_id for c in CHECKS}
  unknown = sorted(wanted - known)
  if unknown:
    raise ValueError(f"--only: unknown check ids {unknown}; known: {', '.join(sorted(known, key=int))}")
  return [c for c in CHECKS if c.check_id in wanted]
