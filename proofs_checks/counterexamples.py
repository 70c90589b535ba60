r"""Hand-built instances: the tight family of Theorem 4.1 and counterexamples.

Write ``r(x) = (1 - alpha(x)) / (T eps(x))`` for one input.  Theorem 4.1 as
stated (Eq. 4) bounds ``E_x[alpha]`` with the *product*
``T E_x[T / L_p(x)] * E_x[eps(x)]``.  Its proof (Appendix B.2) bounds each input,
``alpha(x) >= 1 - 2 T (T / L_p(x)) eps(x)``, and "takes the expectation"; that
gives ``E_x[(T / L_p(x)) eps(x)]``, not the product.  The two differ when short
target outputs coincide with large on-policy loss.  Mixing an input with
``r(x1) > 1`` (weight ``pi -> 0``) with a perfect long input (``L_p = T``,
``alpha = 1``, ``eps = 0``) makes the product bound fail as soon as

.. math:: r(x_1) > \pi T / L_p(x_1) + 1 - \pi,

and conversely, if ``r(x) <= 1`` for every input then
``E[1 - alpha] <= T E[eps] <= T E[T/L_p] E[eps]``: the stated form holds for every
input distribution iff ``r <= 1`` for every single input.  This module builds

* :func:`tight_fixed_length_family`: ``1 - alpha = T eps`` exactly, for every
  ``T`` (fixed target length): the factor ``T`` of Theorem 4.1 is attained;
* :func:`long_tail_markov`: a shared-transition Markov instance (V = 3) with
  ``r(x1) = (T - 1) / (1 + u (T - 1))``, arbitrarily close to ``T - 1``;
* :func:`smallest_counterexample`: two prompts, V = 2 (EOS and one token),
  T = 3, exact rationals, on which Eq. 4 as stated fails.
"""

from __future__ import annotations

from fractions import Fraction

from proofs_checks.tiny_models import InputMixture, Pair, markov_fn

EOS = 0


def tight_fixed_length_family(max_len: int, d: Fraction = Fraction(1, 4)):
  """A Markov pair with fixed target length on which ``1 - alpha = T eps`` exactly.

  Tokens: 0 = EOS (never used), 1 = a, 2 = b.  The target starts with ``a``
  (prob ``1 - d``) or ``b`` (prob ``d``) and repeats its first token; the draft
  always emits ``a``.  So ``TVD_1 = d``, ``TVD(a) = 0``, ``TVD(b) = 1``; under
  the target every position after a ``b`` start differs completely:
  ``A_t = d`` for all t, ``1 - alpha = d``; under the draft only position 1
  differs: ``E_1 = d``, ``eps = d / T``.

  Returns:
    ``(p_init, p_trans, q_init, q_trans)`` as Fractions, vocabulary 3, EOS 0.
  """
  one, zero = Fraction(1), Fraction(0)
  p_init = [zero, 1 - d, d]
  q_init = [zero, one, zero]
  p_trans = [[zero, one, zero], [zero, one, zero], [zero, zero, one]]
  q_trans = [[zero, one, zero], [zero, one, zero], [zero, one, zero]]
  return p_init, p_trans, q_init, q_trans


def long_tail_markov(max_len: int, u: Fraction, pi: Fraction) -> InputMixture:
  """Two inputs sharing Markov transitions (V = 3) that break Eq. 4's product form.

  Tokens 0 = EOS, 1 = a, 2 = b.  Transitions: target ``a -> a``, ``b -> b``;
  draft ``a -> b``, ``b -> b``.  Input ``x1`` (weight ``pi``): both models start
  with EOS (prob ``1 - u``) or ``a`` (prob ``u``).  After ``a`` the target keeps
  emitting ``a`` (``TVD(a) = 1`` at every later position) while the draft moves
  to ``b`` and agrees with the target from then on.  So
  ``1 - alpha(x1) = u (T - 1) / (1 + u (T - 1))``, ``eps(x1) = u / T`` and
  ``L_p(x1) = 1 + u (T - 1)``.  Input ``x2`` (weight ``1 - pi``) starts with ``b``:
  ``p = q`` there, ``alpha = 1``, ``eps = 0``, ``L_p = T``.
  """
  one, zero = Fraction(1), Fraction(0)
  third = Fraction(1, 3)
  p_trans = [[third] * 3, [zero, one, zero], [zero, zero, one]]
  q_trans = [[third] * 3, [zero, zero, one], [zero, zero, one]]
  x1 = [1 - u, u, zero]
  x2 = [zero, zero, one]
  pairs = (Pair(markov_fn(x1, p_trans), markov_fn(x1, q_trans)),
           Pair(markov_fn(x2, p_trans), markov_fn(x2, q_trans)))
  return InputMixture((pi, 1 - pi), pairs, 3, EOS, max_len,
                      f"long-tail Markov T={max_len} u={u} pi={pi}",
                      markov=([(x1, x1), (x2, x2)], p_trans, q_trans))


def smallest_counterexample(u: Fraction = Fraction(1, 16),
                            pi: Fraction = Fraction(1, 16)) -> InputMixture:
  """Two prompts, vocabulary {EOS, a}, T = 3: Eq. 4 as stated fails.

  Prompt ``x1`` (weight ``pi``): both models emit EOS first with prob
  ``1 - u``, else ``a``; after ``a`` the target continues with ``a`` and the
  draft ends (EOS).  ``1 - alpha(x1) = 2u / (1 + 2u)``, ``eps(x1) = u / 2``,
  ``L_p(x1) = 1 + 2u``.  Prompt ``x2`` (weight ``1 - pi``): both models emit
  ``a a a`` (``alpha = 1``, ``eps = 0``, ``L_p = 3``).  With ``u = pi = 1/16``:
  ``E[alpha] = 143/144 = 0.99306`` while Eq. 4 claims
  ``>= 1 - 159/24576 = 0.99353``.
  """
  one, zero = Fraction(1), Fraction(0)
  a_only, eos_only = [zero, one], [one, zero]
  start = [1 - u, u]
  # Each prompt is its own (prompt-conditioned) model; within a prompt both
  # models are Markov in the last token.  Row 0 (after EOS) is never used.
  p1 = markov_fn(start, [eos_only, a_only])
  q1 = markov_fn(start, [eos_only, eos_only])
  p2 = markov_fn(a_only, [eos_only, a_only])
  return InputMixture((pi, 1 - pi), (Pair(p1, q1), Pair(p2, p2)), 2, EOS, 3,
                      f"two prompts, V=2, T=3, u={u}, pi={pi}")
