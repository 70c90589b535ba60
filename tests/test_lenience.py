"""Tests for dspec_theory.lenience (paper section 4)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dspec_theory import lenience as L

probs = st.floats(0.0, 1.0)
epss = st.floats(1e-3, 1.0)


def test_values_match_section_4():
  assert float(L.f_lin(0.1, 0.5)) == pytest.approx(0.2)
  assert float(L.f_sq(0.01, 0.1)) == pytest.approx(1.0)  # "hundred times more likely"
  assert float(L.f_exp(0.25, 0.5)) == pytest.approx(0.5)
  assert float(L.f_exp(0.0, 0.3)) == 0.0


@given(probs, epss)
def test_lenience_is_at_least_p_and_lossless_at_eps_one(p, eps):
  for f in (L.f_lin, L.f_sq, L.f_exp):
    assert float(f(p, eps)) >= p - 1e-15
    assert float(f(p, 1.0)) == pytest.approx(p, abs=1e-15)


@given(probs, probs, epss, epss)
def test_increasing_in_p_decreasing_in_eps(p1, p2, e1, e2):
  lo_p, hi_p = sorted((p1, p2))
  lo_e, hi_e = sorted((e1, e2))
  for f in (L.f_lin, L.f_sq, L.f_exp):
    assert float(f(lo_p, e1)) <= float(f(hi_p, e1)) + 1e-15
    assert float(f(p1, hi_e)) <= float(f(p1, lo_e)) + 1e-12


def test_parse_lenience_forms():
  assert L.parse_lenience(None) is None
  assert L.parse_lenience("lossless") is None
  assert L.parse_lenience("sq:0.5") == L.Lenience("sq", 0.5)
  assert L.parse_lenience(("exp", 0.3)) == L.Lenience("exp", 0.3)
  assert str(L.Lenience("lin", 0.25)) == "lin:0.25"
  np.testing.assert_allclose(np.asarray(L.apply_lenience([0.2, 0.4], "lin:0.5")), [0.4, 0.8])
  np.testing.assert_allclose(np.asarray(L.apply_lenience([0.2, 0.4], None)), [0.2, 0.4])


@pytest.mark.parametrize("spec, match", [
    ("cube:0.5", "unknown lenience function 'cube'"),
    (("lin", 0.0), "eps must be in"),
    (("lin", 1.5), "eps must be in"),
    (("sq", -0.2), "eps must be in"),
    (("exp", float("nan")), "eps must be in"),
    ("sq", "name:eps"),
    ("sq:abc", "eps must be a number"),
    (0.5, "lenience must be"),
])
def test_bad_lenience_raises(spec, match):
  with pytest.raises(ValueError, match=match):
    L.parse_lenience(spec)


def test_direct_functions_check_eps():
  with pytest.raises(ValueError, match="eps"):
    L.f_sq(0.5, 0.0)
