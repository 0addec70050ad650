"""The claim test (Welch, one-sided) against an independent computation, and every verdict branch."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from vlrepro.report.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, decide


def welch_p_greater(a: list[float], b: list[float]) -> float:
    """Textbook Welch: t = (ma - mb) / sqrt(va/na + vb/nb), Welch–Satterthwaite df, upper tail."""
    na, nb = len(a), len(b)
    va, vb = statistics.variance(a), statistics.variance(b)
    se2 = va / na + vb / nb
    t = (statistics.mean(a) - statistics.mean(b)) / math.sqrt(se2)
    df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    return float(stats.t.sf(t, df))


def test_hand_computed_case():
    # a: mean 4, var 4; b: mean 2, var 1 → se² = 5/3, t = 2/sqrt(5/3) = 1.5492, df = (25/9)/(17/18) = 50/17
    a, b = [2.0, 4.0, 6.0], [1.0, 2.0, 3.0]
    expected = float(stats.t.sf(2 / math.sqrt(5 / 3), 50 / 17))
    r = decide(a, b, higher_is_better=True, alpha=0.05)
    assert r.p_value == pytest.approx(expected, rel=1e-9)
    assert r.p_value == pytest.approx(welch_p_greater(a, b), rel=1e-9)
    assert (r.ours_mean, r.ours_std, r.reference_mean, r.reference_std) == pytest.approx((4, 2, 2, 1))
    assert (r.n_ours, r.n_reference) == (3, 3)
    assert r.verdict == INCONCLUSIVE  # right direction, p ≈ 0.11 > 0.05
    assert "Welch" in r.test and "one-sided" in r.test


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.floats(0, 1), min_size=2, max_size=6, unique=True),
    st.lists(st.floats(0, 1), min_size=2, max_size=6, unique=True),
)
def test_p_value_matches_textbook_formula(a, b):
    r = decide(a, b, higher_is_better=True, alpha=0.05)
    assert r.p_value == pytest.approx(welch_p_greater(a, b), rel=1e-6, abs=1e-12)
    # the lower-is-better test of (a, b) is the higher-is-better test of (b, a)
    assert decide(a, b, higher_is_better=False, alpha=0.05).p_value == pytest.approx(
        welch_p_greater(b, a), rel=1e-6, abs=1e-12
    )


def test_reproduced():
    r = decide([0.80, 0.82, 0.84], [0.70, 0.71, 0.72], higher_is_better=True, alpha=0.05)
    assert r.verdict == REPRODUCED and r.p_value < 0.01


def test_reproduced_lower_is_better():
    r = decide([0.010, 0.012, 0.011], [0.030, 0.034, 0.032], higher_is_better=False, alpha=0.05)
    assert r.verdict == REPRODUCED and "<" in r.test


def test_not_reproduced_wrong_direction():
    r = decide([0.70, 0.71, 0.72], [0.80, 0.82, 0.84], higher_is_better=True, alpha=0.05)
    assert r.verdict == NOT_REPRODUCED and r.p_value > 0.5


def test_not_reproduced_zero_difference():
    r = decide([0.5, 0.6, 0.7], [0.7, 0.6, 0.5], higher_is_better=True, alpha=0.05)
    assert r.verdict == NOT_REPRODUCED


def test_inconclusive_not_significant():
    r = decide([0.70, 0.90, 0.60], [0.70, 0.72, 0.68], higher_is_better=True, alpha=0.05)
    assert r.verdict == INCONCLUSIVE and r.p_value >= 0.05


@pytest.mark.parametrize(("ours", "reference"), [([0.9], [0.1, 0.2]), ([0.9, 0.8], [0.1]), ([], [0.1, 0.2])])
def test_inconclusive_with_fewer_than_two_seeds(ours, reference):
    r = decide(ours, reference, higher_is_better=True, alpha=0.05)
    assert r.verdict == INCONCLUSIVE and math.isnan(r.p_value) and "fewer than 2" in r.test


def test_alpha_decides_between_reproduced_and_inconclusive():
    a, b = [2.0, 4.0, 6.0], [1.0, 2.0, 3.0]  # p ≈ 0.11
    assert decide(a, b, True, alpha=0.2).verdict == REPRODUCED
    assert decide(a, b, True, alpha=0.05).verdict == INCONCLUSIVE


def test_zero_spread_on_both_sides_is_an_exact_comparison():
    assert decide([1.0, 1.0], [0.0, 0.0], True, 0.05).verdict == REPRODUCED
    assert decide([1.0, 1.0], [1.0, 1.0], True, 0.05).verdict == NOT_REPRODUCED


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5])
def test_alpha_out_of_range(alpha):
    with pytest.raises(ValueError, match="alpha"):
        decide([1.0, 2.0], [0.0, 1.0], True, alpha)


def test_non_finite_values_rejected():
    with pytest.raises(ValueError, match="finite"):
        decide([1.0, float("nan")], [0.0, 1.0], True, 0.05)
