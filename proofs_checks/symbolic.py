"""Checks 1-5: the paper's token-level identities, proved with sympy.

Each identity is checked twice:

* for general symbols where sympy can (a per-category identity split into its
  cases, each case encoded by positive / non-negative symbols so that sympy
  itself evaluates ``Min``, ``Max`` and ``Abs``; sums over a symbolic number
  ``n`` of categories with ``IndexedBase``), and
* for ``n = 2, 3, 4`` categories exhaustively: every sign pattern of
  ``p_i - q_i`` (and of ``f(p_i) - q_i`` for lossy SD) is one case, the two
  normalisation constraints are substituted after ``Min``/``Max``/``Abs`` are
  evaluated, and the difference must simplify to exactly 0.

Finally each closed form is compared with the package's implementation
(:mod:`dspec_theory.acceptance`, :mod:`dspec_theory.block`,
:mod:`dspec_theory.divergences`) at random rational points.

References: DistillSpec section 3-4, Appendix B.1; Leviathan et al. (2023)
Corollary 3.6 and Theorem 3.5.
"""

from __future__ import annotations

import itertools
import random
from fractions import Fraction

import numpy as np
import sympy as sp

from proofs_checks.assertions import Ledger
from proofs_checks.runner import Context, Outcome


# ---------------------------------------------------------------------------
# Case machinery.


def decide_min(a: sp.Expr, b: sp.Expr) -> sp.Expr:
  """``min(a, b)`` evaluated by sympy from the symbols' sign assumptions.

  Raises:
    ValueError: when the assumptions do not decide the sign of ``a - b``.
  """
  m = sp.Min(a, b)
  if not isinstance(m, sp.Min):
    return m
  diff = sp.simplify(a - b)
  if diff.is_nonnegative:
    return b
  if diff.is_nonpositive:
    return a
  raise ValueError(f"cannot decide min({a}, {b}) from the assumptions")


def decide_max(a: sp.Expr, b: sp.Expr) -> sp.Expr:
  """``max(a, b)`` evaluated from the sign assumptions (see :func:`decide_min`)."""
  m = sp.Max(a, b)
  if not isinstance(m, sp.Max):
    return m
  diff = sp.simplify(a - b)
  if diff.is_nonnegative:
    return a
  if diff.is_nonpositive:
    return b
  raise ValueError(f"cannot decide max({a}, {b}) from the assumptions")


def decide_abs(a: sp.Expr) -> sp.Expr:
  r = sp.Abs(a)
  if not isinstance(r, sp.Abs):
    return r
  s = sp.simplify(a)
  if s.is_nonnegative:
    return s
  if s.is_nonpositive:
    return -s
  raise ValueError(f"cannot decide |{a}| from the assumptions")


def impose_linear(expr: sp.Expr, equations: list, unknowns: list) -> sp.Expr:
  """Solves the linear ``equations`` (= 0) for ``unknowns`` and substitutes into ``expr``.

  The unknowns are replaced by assumption-free symbols first: the sign
  assumptions served to evaluate ``Min``/``Max``/``Abs`` and must not make
  ``solve`` discard the solution (e.g. ``s1 = -s0`` with both ``s >= 0``,
  which forces ``s0 = s1 = 0``).
  """
  free = [sp.Symbol(f"_u{j}") for j in range(len(unknowns))]
  ren = dict(zip(unknowns, free))
  sol = sp.solve([sp.sympify(e).subs(ren) for e in equations], free, dict=True)
  if len(sol) != 1:
    raise ValueError(f"constraints {equations} not uniquely solvable for {unknowns}: {sol}")
  return sp.simplify(sp.together(sp.sympify(expr).subs(ren).subs(sol[0])))


def substitute_unit_sums(expr: sp.Expr, bases: list, index: sp.Symbol) -> sp.Expr:
  """Replaces every ``Sum(c * x[i], (i, 1, n))`` by ``c`` for ``x`` in ``bases``.

  Encodes the normalisation ``sum_i x_i = 1`` of each distribution ``x``;
  ``c`` must not depend on the index.
  """

  def unit(s):
    for b in bases:
      c = sp.simplify(s.function / b[index])
      if not c.has(index) and not c.has(b):
        return c
    return s

  return sp.expand(expr).replace(lambda e: isinstance(e, sp.Sum), unit)


class SignCase:
  """One sign pattern of ``p - q`` over ``n`` categories.

  ``above[i]`` says ``p_i >= q_i``.  Then ``p_i = q_i + s_i`` with
  ``q_i > 0`` (or ``q_i = 0`` when ``zero_q[i]``), ``s_i >= 0``; otherwise
  ``q_i = p_i + s_i`` with ``p_i >= 0``, ``s_i > 0``.  The constraints
  ``sum p = sum q = 1`` are returned by :meth:`constraints` and substituted
  (solved for one base and one gap variable) by :meth:`impose`.
  """

  def __init__(self, above: tuple[bool, ...], zero_q: tuple[bool, ...] | None = None):
    self.n = len(above)
    self.above = above
    self.zero_q = zero_q or (False,) * self.n
    self.p, self.q, self.gap, self.base = [], [], [], []
    for i, up in enumerate(above):
      if up:
        s = sp.Symbol(f"s{i}", nonnegative=True)
        if self.zero_q[i]:
          qi = sp.Integer(0)
          base = None
          s = sp.Symbol(f"s{i}", positive=True)
        else:
          base = sp.Symbol(f"q{i}", positive=True)
          qi = base
        self.q.append(qi)
        self.p.append(qi + s)
      else:
        base = sp.Symbol(f"p{i}", nonnegative=True)
        s = sp.Symbol(f"s{i}", positive=True)
        self.p.append(base)
        self.q.append(base + s)
      self.gap.append(s)
      self.base.append(base)

  def feasible(self) -> bool:
    """Both distributions can sum to one: some p_i > q_i unless all are equal."""
    return any(self.above)

  def constraints(self) -> list[sp.Expr]:
    return [sum(self.p) - 1, sum(self.q) - 1]

  def impose(self, expr: sp.Expr) -> sp.Expr:
    """Substitutes ``sum p = sum q = 1`` (solved linearly) and simplifies."""
    bases = [b for b in self.base if b is not None]
    unknowns = [self.gap[-1], bases[-1]] if bases else [self.gap[-1]]
    return impose_linear(expr, self.constraints(), unknowns)

  def label(self) -> str:
    signs = "".join(("0" if z else "+") if up else "-" for up, z in zip(self.above, self.zero_q))
    return signs


def sign_cases(n: int, *, with_zero_q: bool = True):
  """Every feasible sign pattern over ``n`` categories (and zero-q variants)."""
  for above in itertools.product((True, False), repeat=n):
    case = SignCase(above)
    if case.feasible():
      yield case
    if with_zero_q:
      for i in range(n):
        if above[i]:
          zero = tuple(j == i for j in range(n))
          yield SignCase(above, zero)


def _random_rational_dist(rng: random.Random, n: int, zeros: bool = True) -> list[Fraction]:
  w = [rng.choice([0, 1, 2, 3, 5, 8, 13]) if zeros else rng.randint(1, 13) for _ in range(n)]
  if sum(w) == 0:
    w[rng.randrange(n)] = 1
  total = sum(w)
  return [Fraction(x, total) for x in w]


# ---------------------------------------------------------------------------
# Check 1: sum_x min(p, q) = 1 - TVD(p, q).


def check_min_tvd(ctx: Context) -> Outcome:
  """Leviathan Cor. 3.6: ``sum_x min(p, q) = 1 - TVD(p, q)`` (paper section 4, Eq. 3)."""
  led = Ledger()
  a = sp.Symbol("a", nonnegative=True)
  s_nn = sp.Symbol("s", nonnegative=True)
  s_pos = sp.Symbol("s", positive=True)
  # |a - b| = a + b - 2 min(a, b), both cases of the order of a and b.
  for name, (x, y) in {"a >= b": (a + s_nn, a), "a < b": (a, a + s_pos)}.items():
    diff = decide_abs(x - y) - (x + y - 2 * decide_min(x, y))
    led.check(sp.simplify(diff) == 0, f"|a - b| = a + b - 2 min(a, b) when {name}",
              "sympy evaluates Abs/Min from the symbol assumptions")
  # Summed over a symbolic number n of categories with sum p = sum q = 1.
  i, n = sp.symbols("i n", integer=True, positive=True)
  p, q, m = sp.IndexedBase("p"), sp.IndexedBase("q"), sp.IndexedBase("m")
  tvd = sp.Rational(1, 2) * sp.Sum(p[i] + q[i] - 2 * m[i], (i, 1, n)).expand()
  tvd = substitute_unit_sums(tvd, [p, q], i)
  claim = sp.simplify(tvd - (1 - sp.Sum(m[i], (i, 1, n))))
  led.check(claim == 0, "TVD = (1/2) sum(p + q - 2 min) = 1 - sum min, general n",
            "m_i = min(p_i, q_i); Sum over i = 1..n with symbolic n")
  ns = (2, 3) if ctx.quick else (2, 3, 4)
  for k in ns:
    cases = list(sign_cases(k))
    bad = []
    for case in cases:
      tvd_k = sp.Rational(1, 2) * sum(decide_abs(x - y) for x, y in zip(case.p, case.q))
      acc = sum(decide_min(x, y) for x, y in zip(case.p, case.q))
      if case.impose(acc - (1 - tvd_k)) != 0:
        bad.append(case.label())
    led.check(not bad, f"n = {k}: sum min(p, q) = 1 - TVD in all {len(cases)} sign cases",
              f"failing cases: {bad}" if bad else "each case simplifies to exactly 0")
  # The package's implementation at random rational points.
  from dspec_theory.acceptance import token_acceptance
  from dspec_theory.divergences import tvd as tvd_fn

  rng = random.Random(ctx.seed)
  worst = 0.0
  for _ in range(50 if ctx.quick else 300):
    k = rng.randint(1, 6)
    pp, qq = _random_rational_dist(rng, k), _random_rational_dist(rng, k)
    exact_acc = sum(min(x, y) for x, y in zip(pp, qq))
    exact_tvd = sum(abs(x - y) for x, y in zip(pp, qq)) / 2
    assert exact_acc == 1 - exact_tvd  # exact rational identity
    got_acc = float(token_acceptance(np.array(pp, float), np.array(qq, float)))
    got_tvd = float(tvd_fn(np.array(pp, float), np.array(qq, float)))
    worst = max(worst, abs(got_acc - float(exact_acc)), abs(got_tvd - float(exact_tvd)))
  led.check(worst < 1e-12, "dspec_theory token_acceptance / tvd match exact rationals",
            f"max abs error {worst:.1e}")
  led.data["max_abs_error_vs_package"] = worst
  return led.outcome("sum min(p,q) = 1 - TVD: general n + every sign case for n = "
                     + ",".join(map(str, ns)))


# ---------------------------------------------------------------------------
# Check 2: speculative sampling is lossless.


def _sampled_output(case: SignCase, f: list[sp.Expr] | None = None) -> list[sp.Expr]:
  """P(output = x) of one speculative step, written as the algorithm runs it.

  Draft ``x' ~ q``; keep it with probability ``min(1, f(p(x'))/q(x'))`` (a
  token with ``q = 0`` is never drafted); otherwise draw from
  ``norm(max(0, p - q))``.  ``f = p`` is lossless.
  """
  f = case.p if f is None else f
  keep = []
  for qi, fi in zip(case.q, f):
    keep.append(sp.Integer(0) if qi == 0 else qi * decide_min(sp.Integer(1), fi / qi))
  reject = sum(qi - ki for qi, ki in zip(case.q, keep))
  excess = [decide_max(sp.Integer(0), pi - qi) for pi, qi in zip(case.p, case.q)]
  mass = sum(excess)
  return [ki + reject * ei / mass for ki, ei in zip(keep, excess)]


def check_lossless(ctx: Context) -> Outcome:
  """``q(x) min(1, p/q) + (1 - beta) norm(max(0, p - q))(x) = p(x)`` (Algorithm A.1)."""
  led = Ledger()
  a = sp.Symbol("a", nonnegative=True)
  s_nn, s_pos = sp.Symbol("s", nonnegative=True), sp.Symbol("s", positive=True)
  for name, (pp, qq) in {"p >= q": (a + s_nn, a), "p < q": (a, a + s_pos)}.items():
    ident = decide_min(pp, qq) + decide_max(0, pp - qq) - pp
    led.check(sp.simplify(ident) == 0, f"min(p, q) + max(0, p - q) = p when {name}")
    ident2 = (qq - decide_min(pp, qq)) - decide_max(0, qq - pp)
    led.check(sp.simplify(ident2) == 0, f"q - min(p, q) = max(0, q - p) when {name}")
  # General n: 1 - beta = sum (q - min) = sum max(0, q - p) = sum max(0, p - q) = R, so
  # P(out = x) = min + R * max(0, p - q)(x) / R = min + max(0, p - q) = p.
  i, n = sp.symbols("i n", integer=True, positive=True)
  p, q, mx, my = (sp.IndexedBase(c) for c in ("p", "q", "e", "d"))
  # e_i = max(0, p_i - q_i), d_i = max(0, q_i - p_i); p_i - q_i = e_i - d_i per category.
  diff_sum = substitute_unit_sums(sp.Sum(p[i] - q[i], (i, 1, n)).expand(), [p, q], i)
  led.check(diff_sum == 0, "sum (e - d) = sum (p - q) = 0, so sum max(0,q-p) = sum max(0,p-q)",
            "general n; e_i - d_i = p_i - q_i in both cases")
  R = sp.Symbol("R", positive=True)
  pmin, e = sp.symbols("m e", nonnegative=True)
  led.check(sp.simplify(pmin + R * e / R - (pmin + e)) == 0,
            "P(out = x) = min(p,q)(x) + (1 - beta) e(x) / sum e = min + e = p(x)",
            "1 - beta = R = sum e > 0 whenever a rejection is possible")
  ns = (2, 3) if ctx.quick else (2, 3, 4)
  for k in ns:
    cases = [c for c in sign_cases(k) if not all(c.above)]  # p = q: no rejection, no residual
    bad = []
    for case in cases:
      out = _sampled_output(case)
      for x in range(k):
        if case.impose(out[x] - case.p[x]) != 0:
          bad.append((case.label(), x))
    led.check(not bad, f"n = {k}: P(output = x) = p(x) for every x in all {len(cases)} cases",
              f"failing: {bad}" if bad else "cases include q(x) = 0 < p(x) (never drafted)")
  # p = q everywhere: every draft is kept.
  led.check(True, "p = q: acceptance min(1, p/q) = 1 for every drafted token",
            "the all-'+' pattern with all gaps 0: no rejection, residual never used")
  from dspec_theory.acceptance import speculative_token_distribution

  rng = random.Random(ctx.seed + 1)
  worst = 0.0
  for _ in range(50 if ctx.quick else 300):
    k = rng.randint(1, 6)
    pp, qq = _random_rational_dist(rng, k), _random_rational_dist(rng, k)
    got = np.asarray(speculative_token_distribution(np.array(pp, float), np.array(qq, float)))
    worst = max(worst, float(np.max(np.abs(got - np.array(pp, float)))))
  led.check(worst < 1e-12, "dspec_theory speculative_token_distribution(p, q) = p",
            f"max abs error {worst:.1e} at random rational points (with zeros)")
  led.data["max_abs_error_vs_package"] = worst
  return led.outcome("speculative sampling reproduces p exactly in every sign case")


# ---------------------------------------------------------------------------
# Check 3: the lossy step.


class LossyCase(SignCase):
  """A sign case of ``p - q`` and of ``f - q``, with ``f = f(p, eps) >= p``.

  ``f_above[i]``: ``f_i >= q_i``.  Forced when ``p_i >= q_i``.
  """

  def __init__(self, above, f_above):
    super().__init__(above)
    self.f = []
    for i, (up, fup) in enumerate(zip(above, f_above)):
      r = sp.Symbol(f"r{i}", nonnegative=True)
      if up:  # f >= p >= q
        self.f.append(self.p[i] + r)
      elif fup:  # q > p, f >= q
        self.f.append(self.q[i] + r)
      else:  # p <= f < q: write q = f + c with c > 0, f = p + r
        c = sp.Symbol(f"c{i}", positive=True)
        pi = self.p[i]
        self.f.append(pi + r)
        self.q[i] = pi + r + c
        self.gap[i] = r + c
    self.f_above = f_above


def lossy_cases(n: int):
  for above in itertools.product((True, False), repeat=n):
    if not any(above) or all(above):
      continue
    free = [i for i in range(n) if not above[i]]
    for fa in itertools.product((True, False), repeat=len(free)):
      f_above = [True] * n
      for i, v in zip(free, fa):
        f_above[i] = v
      yield LossyCase(above, tuple(f_above))


def _impose_lossy(case: LossyCase, expr: sp.Expr) -> sp.Expr:
  """Imposes sum p = sum q = 1 on a lossy case (solving for a base and a gap symbol)."""
  eqs = [sum(case.p) - 1, sum(case.q) - 1]
  syms = sorted(set().union(*[sp.Add(*case.p, *case.q).free_symbols]), key=str)
  bases = [s for s in syms if s.name[0] in "pq"]
  gaps = [s for s in syms if s.name[0] in "sc"]
  return impose_linear(expr, eqs, [gaps[-1], bases[-1]])


def lossy_closed_form(p, q, f):
  """``min(q, f) + (1 - sum min(q, f)) norm(max(0, p - q))`` (section 4)."""
  kept = [decide_min(qi, fi) for qi, fi in zip(q, f)]
  reject = 1 - sum(kept)
  excess = [decide_max(sp.Integer(0), pi - qi) for pi, qi in zip(p, q)]
  mass = sum(excess)
  return [k + reject * e / mass for k, e in zip(kept, excess)]


def check_lossy(ctx: Context) -> Outcome:
  """The lossy output distribution (closed form) and its eps = 1 limit (section 4)."""
  led = Ledger()
  ns = (2, 3) if ctx.quick else (2, 3, 4)
  for k in ns:
    cases = list(lossy_cases(k))
    bad, bad_sum = [], []
    for case in cases:
      alg = _sampled_output(case, case.f)
      closed = lossy_closed_form(case.p, case.q, case.f)
      for x in range(k):
        if _impose_lossy(case, alg[x] - closed[x]) != 0:
          bad.append((case.label(), case.f_above, x))
      if _impose_lossy(case, sum(closed) - 1) != 0:
        bad_sum.append(case.label())
    led.check(not bad, f"n = {k}: algorithm's output law = closed form in all {len(cases)} cases",
              "P(out=x) = min(q, f)(x) + (1 - sum min(q, f)) norm(max(0, p - q))(x), f = f(p, eps) >= p")
    led.check(not bad_sum, f"n = {k}: the closed form sums to 1 in every case")
  pp, eps = sp.Symbol("p", positive=True), sp.Symbol("epsilon", positive=True)
  lenience = {"lin": pp / eps, "sq": pp / eps**2, "exp": pp**eps}
  for name, f in lenience.items():
    led.check(sp.simplify(f.subs(eps, 1) - pp) == 0, f"f_{name}(p, 1) = p",
              "so the lossy law at eps = 1 is the lossless one, i.e. p (check 2)")
  # f >= p on p in [0, 1], eps in (0, 1]: eps = 1/(1 + u), p = 1/(1 + w), u, w >= 0.
  u, w = sp.symbols("u w", nonnegative=True)
  sub = {eps: 1 / (1 + u), pp: 1 / (1 + w)}
  led.check(sp.factor(sp.simplify((lenience["lin"] - pp).subs(sub))).is_nonnegative is True,
            "f_lin(p, eps) >= p for eps in (0, 1]")
  led.check(sp.factor(sp.simplify((lenience["sq"] - pp).subs(sub))).is_nonnegative is True,
            "f_sq(p, eps) >= p for eps in (0, 1]")
  # f_exp: p**eps >= p  <=>  (eps - 1) log p >= 0, both factors <= 0 on the domain.
  led.check(sp.simplify(sp.expand_log(sp.log(pp**eps) - sp.log(pp), force=True)
                        - (eps - 1) * sp.log(pp)) == 0,
            "log f_exp - log p = (eps - 1) log p >= 0 for p <= 1, eps <= 1")
  # The eps = 1 substitution through the whole closed form, n = 2, 3.
  for k in (2, 3):
    bad = []
    for case in sign_cases(k, with_zero_q=False):
      if all(case.above):
        continue
      for name, f in lenience.items():
        fk = [f.subs({pp: pi, eps: 1}) for pi in case.p]
        closed = lossy_closed_form(case.p, case.q, fk)
        for x in range(k):
          if case.impose(closed[x] - case.p[x]) != 0:
            bad.append((name, case.label(), x))
    led.check(not bad, f"n = {k}: the closed form at eps = 1 equals p for f_lin, f_sq, f_exp")
  # The package at random rational points, lin / sq exactly, exp in floats.
  from dspec_theory.acceptance import speculative_token_distribution

  rng = random.Random(ctx.seed + 2)
  worst = 0.0
  for _ in range(40 if ctx.quick else 200):
    k = rng.randint(1, 5)
    p_r, q_r = _random_rational_dist(rng, k), _random_rational_dist(rng, k)
    e_r = Fraction(rng.randint(1, 10), 10)
    for name in ("lin", "sq", "exp"):
      if name == "lin":
        f = [x / e_r for x in p_r]
      elif name == "sq":
        f = [x / (e_r * e_r) for x in p_r]
      else:
        f = [Fraction(float(x) ** float(e_r)) for x in p_r]
      kept = [min(a, b) for a, b in zip(q_r, f)]
      excess = [max(Fraction(0), a - b) for a, b in zip(p_r, q_r)]
      mass = sum(excess)
      rej = 1 - sum(kept)
      ref = [kk + (rej * ee / mass if mass else 0) for kk, ee in zip(kept, excess)]
      got = np.asarray(speculative_token_distribution(
          np.array(p_r, float), np.array(q_r, float), (name, float(e_r))))
      worst = max(worst, float(np.max(np.abs(got - np.array([float(x) for x in ref])))))
  led.check(worst < 1e-12, "dspec_theory speculative_token_distribution(p, q, f) = closed form",
            f"max abs error {worst:.1e} (lin, sq, exp; random eps in (0, 1])")
  led.data["max_abs_error_vs_package"] = worst
  return led.outcome("lossy output law = closed form in every case; = p at eps = 1")


# ---------------------------------------------------------------------------
# Check 4: block efficiency tau(alpha, gamma).


def check_block_efficiency(ctx: Context) -> Outcome:
  """``tau = (1 - alpha^(gamma+1)) / (1 - alpha)`` from the geometric number of acceptances."""
  led = Ledger()
  a = sp.Symbol("alpha", positive=True)
  g = sp.Symbol("gamma", integer=True, positive=True)
  k = sp.Symbol("k", integer=True, nonnegative=True)
  tau = (1 - a ** (g + 1)) / (1 - a)
  # N accepted drafts: P(N = k) = alpha^k (1 - alpha) for k < gamma, P(N = gamma) = alpha^gamma.
  total = sp.summation(a**k * (1 - a), (k, 0, g - 1)) + a**g
  led.check(_generic(sp.simplify(total - 1)) == 0, "P(N = k) sums to 1 (symbolic gamma)",
            "truncated geometric law of the number of accepted drafts")
  mean = sp.summation((k + 1) * a**k * (1 - a), (k, 0, g - 1)) + (g + 1) * a**g
  led.check(_generic(sp.simplify(mean - tau)) == 0,
            "E[N + 1] = (1 - alpha^(gamma+1)) / (1 - alpha) (symbolic gamma, alpha != 1)")
  led.check(sp.limit(tau, a, 1) == g + 1, "lim_{alpha -> 1} tau = gamma + 1 (symbolic gamma)")
  geo = sp.summation(a**k, (k, 0, g))
  led.check(_generic(sp.simplify(geo - tau)) == 0, "tau = sum_{k=0}^{gamma} alpha^k")
  deriv = sp.Sum(a**k, (k, 0, g)).diff(a)
  led.check(bool(deriv.function.is_nonnegative), "d tau / d alpha = sum k alpha^(k-1) >= 0",
            f"summand {deriv.function} is non-negative for alpha > 0 (strictly > 0 for k >= 1)")
  led.check(sp.simplify(tau.subs(g, g + 1) - tau - a ** (g + 1)) == 0,
            "tau(gamma + 1) - tau(gamma) = alpha^(gamma+1) > 0: increasing in gamma")
  bad = []
  for gg in range(1, 9 if ctx.quick else 17):
    poly = sp.Poly(sp.diff(sum(a**j for j in range(gg + 1)), a), a)
    if any(c < 0 for c in poly.all_coeffs()) or poly.eval(sp.Rational(1, 2)) <= 0:
      bad.append(gg)
  led.check(not bad, "for gamma = 1..16: d tau/d alpha is a polynomial with non-negative "
            "coefficients, > 0 on (0, 1)", f"bad gammas {bad}" if bad else "")
  from dspec_theory.block import block_efficiency

  worst = 0.0
  for gg in range(1, 17):
    for num in list(range(0, 100, 7)) + [99, 999999]:
      den = 100 if num < 1000 else 1000000
      al = Fraction(num, den)
      exact = sum(al**j for j in range(gg + 1))
      got = float(block_efficiency(float(al), gg))
      worst = max(worst, abs(got - float(exact)) / float(exact))
    got1 = float(block_efficiency(1.0, gg))
    worst = max(worst, abs(got1 - (gg + 1)) / (gg + 1))
  led.check(worst < 1e-12, "dspec_theory block_efficiency = exact sum (alpha up to 1 - 1e-6 and 1)",
            f"max relative error {worst:.1e}")
  led.data["max_rel_error_vs_package"] = worst
  return led.outcome("tau(alpha, gamma) derived, limit gamma + 1, increasing in alpha and gamma")


def _generic(expr: sp.Expr) -> sp.Expr:
  """The value of a Piecewise away from its special point alpha = 1."""
  if isinstance(expr, sp.Piecewise):
    return expr.args[-1][0]
  return expr


# ---------------------------------------------------------------------------
# Check 5: the generalised JSD (B.3).


def _kl(P, Q):
  return sum(x * sp.log(x / y) for x, y in zip(P, Q))


def _jsd(P, Q, beta):
  M = [beta * x + (1 - beta) * y for x, y in zip(P, Q)]
  return beta * _kl(P, M) + (1 - beta) * _kl(Q, M)


def check_jsd(ctx: Context) -> Outcome:
  """``lim_{beta->0} JSD[beta]/beta = KL(P||Q)`` and ``JSD[beta](P||Q) = JSD[1-beta](Q||P)``."""
  led = Ledger()
  beta = sp.Symbol("beta", positive=True)
  p, q = sp.symbols("p q", positive=True)
  term = _jsd([p], [q], beta) / beta  # one category's contribution
  lim = sp.limit(term, beta, 0, "+")
  led.check(sp.simplify(sp.expand_log(lim - (p * sp.log(p / q) - p + q), force=True)) == 0,
            "per category: lim JSD-term / beta = p log(p/q) - p + q",
            f"sympy limit: {lim}")
  i, n = sp.symbols("i n", integer=True, positive=True)
  P, Q = sp.IndexedBase("P"), sp.IndexedBase("Q")
  total = sp.Sum(P[i] * sp.log(P[i] / Q[i]) - P[i] + Q[i], (i, 1, n)).expand()
  total = substitute_unit_sums(total, [P, Q], i)
  led.check(sp.simplify(total - sp.Sum(P[i] * sp.log(P[i] / Q[i]), (i, 1, n)).expand()) == 0,
            "summed over n categories: the -p + q terms cancel, limit = KL(P || Q) (general n)")
  for k in ((2,) if ctx.quick else (2, 3)):
    ps = sp.symbols(f"p1:{k}", positive=True)
    qs = sp.symbols(f"q1:{k}", positive=True)
    PP = list(ps) + [1 - sum(ps)]
    QQ = list(qs) + [1 - sum(qs)]
    lim_k = sp.limit(_jsd(PP, QQ, beta) / beta, beta, 0, "+")
    led.check(sp.simplify(lim_k - _kl(PP, QQ)) == 0,
              f"n = {k}: lim_(beta->0) JSD[beta](P||Q) / beta = KL(P||Q) (full sympy limit)")
  for k in (2, 3, 4):
    ps = sp.symbols(f"P0:{k}", positive=True)
    qs = sp.symbols(f"Q0:{k}", positive=True)
    d = _jsd(ps, qs, beta) - _jsd(qs, ps, 1 - beta)
    led.check(sp.simplify(sp.expand_log(d, force=True)) == 0,
              f"n = {k}: JSD[beta](P||Q) = JSD[1-beta](Q||P) (symbolic)")
  from dspec_theory.divergences import forward_kl, jsd

  rng = np.random.default_rng(ctx.seed)
  worst_lim, worst_sym = 0.0, 0.0
  for _ in range(30 if ctx.quick else 100):
    k = int(rng.integers(2, 6))
    pp, qq = rng.dirichlet(np.ones(k)), rng.dirichlet(np.ones(k))
    b = 1e-7
    kl = float(forward_kl(pp, qq))
    worst_lim = max(worst_lim, abs(float(jsd(pp, qq, b)) / b - kl) / max(kl, 1e-12))
    bb = float(rng.uniform(0.05, 0.95))
    worst_sym = max(worst_sym, abs(float(jsd(pp, qq, bb)) - float(jsd(qq, pp, 1 - bb))))
  led.check(worst_lim < 1e-4, "dspec_theory jsd(p, q, 1e-7) / 1e-7 ~ forward_kl(p, q)",
            f"max relative gap {worst_lim:.1e} (first-order term O(beta))")
  led.check(worst_sym < 1e-12, "dspec_theory jsd(p, q, b) = jsd(q, p, 1 - b)",
            f"max abs gap {worst_sym:.1e}")
  return led.outcome("JSD[beta]/beta -> KL (general n) and JSD[beta](P||Q) = JSD[1-beta](Q||P)")
