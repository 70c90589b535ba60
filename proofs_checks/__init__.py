"""proofs_checks: machine checks of DistillSpec's maths (issue 4).

Run everything with ``dspec proofs`` or ``python -m proofs_checks`` (``--quick``
for small sizes, ``--out`` for the results folder, ``--only 6,8`` for a subset).
It prints a pass/fail table and writes ``report.md``, ``results.json`` and plots.

Checks (see :mod:`proofs_checks.checks`):

1-5  symbolic (sympy): sum min(p, q) = 1 - TVD; lossless speculative sampling;
     the lossy step's law and its eps = 1 limit; tau(alpha, gamma); JSD[beta].
6-8  exact numerics: Lemma B.1; Lemma B.2's variational forms and every step of
     Lemma B.3's telescoping via the mixed-sampling laws M(x, y, z); Theorem 4.1
     on random instances with several inputs x, and a counterexample to its
     stated product form.
9-10 tightness of Theorem 4.1 by gradient search through the exact layer, and
     the i.i.d. block-efficiency formula against the exact one.
11   the sampler conformance checker (:mod:`dspec_theory.conformance`).

Modules import JAX, sympy and matplotlib lazily so that importing this package
is cheap.
"""
