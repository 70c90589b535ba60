"""Hypothesis strategies and statistical helpers shared by the theory tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st


@st.composite
def distributions(draw, vocab_size: int | None = None, min_vocab: int = 1, max_vocab: int = 8,
                  allow_zeros: bool = True):
  """A float64 probability vector (numpy), possibly with exact zeros."""
  v = vocab_size if vocab_size is not None else draw(st.integers(min_vocab, max_vocab))
  weights = draw(
      st.lists(
          st.one_of(st.just(0.0), st.floats(1e-3, 10.0)) if allow_zeros else st.floats(1e-3, 10.0),
          min_size=v, max_size=v,
      )
  )
  w = np.asarray(weights, np.float64)
  if w.sum() <= 0:
    w[draw(st.integers(0, v - 1))] = 1.0
  return w / w.sum()


@st.composite
def distribution_pairs(draw, min_vocab: int = 1, max_vocab: int = 8, allow_zeros: bool = True):
  v = draw(st.integers(min_vocab, max_vocab))
  return (draw(distributions(v, allow_zeros=allow_zeros)),
          draw(distributions(v, allow_zeros=allow_zeros)))


def chi_square_pvalue(observed_counts: dict, expected_probs: dict, num_samples: int,
                      min_expected: float = 5.0) -> float:
  """Pearson chi-square goodness-of-fit p-value over outcome cells.

  Cells whose expected count is below ``min_expected`` are pooled into one
  cell (so the chi-square approximation holds).  Outcomes observed but with
  expected probability 0 make the test fail outright (p-value 0).  The one
  implementation is :func:`dspec_theory.chi_square.chi_square_test`.
  """
  from dspec_theory.chi_square import chi_square_test

  return chi_square_test(observed_counts, expected_probs, num_samples,
                         min_expected=min_expected)[1]
