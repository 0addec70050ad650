"""The claim tests (paired for matched seeds, else Welch; one-sided) against independent computations, and every
verdict branch."""

from __future__ import annotations

import math
import statistics

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from vlrepro.report.claims import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, ClaimError, claims_ledger, decide
from vlrepro.report.collect import VALUE_COLUMNS, Collection, MetricsFile


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
@given(  # metric-like values on a 1e-3 grid: distinct values, so both variances are positive (no subnormals)
    st.lists(st.integers(0, 1000).map(lambda i: i / 1000), min_size=2, max_size=6, unique=True),
    st.lists(st.integers(0, 1000).map(lambda i: i / 1000), min_size=2, max_size=6, unique=True),
)
def test_p_value_matches_textbook_formula(a, b):
    r = decide(a, b, higher_is_better=True, alpha=0.05)
    assert r.p_value == pytest.approx(welch_p_greater(a, b), rel=1e-6, abs=1e-12)
    # the lower-is-better test of (a, b) is the higher-is-better test of (b, a)
    assert decide(a, b, higher_is_better=False, alpha=0.05).p_value == pytest.approx(
        welch_p_greater(b, a), rel=1e-6, abs=1e-12
    )



def test_margin_makes_a_non_inferiority_claim():
    ours, ref = [0.60, 0.62, 0.58], [0.64, 0.66, 0.65]  # ours is below the reference, within 10 % of it
    plain = decide(ours, ref, higher_is_better=True, alpha=0.05, ours_seeds=[0, 1, 2], reference_seeds=[0, 1, 2])
    assert plain.verdict == NOT_REPRODUCED
    r = decide(ours, ref, True, 0.05, [0, 1, 2], [0, 1, 2], margin=0.2)  # bar: 0.8 × reference = 0.52
    bar = [0.8 * x for x in ref]
    assert r.p_value == pytest.approx(stats.ttest_rel(ours, bar, alternative="greater").pvalue, rel=1e-9)
    assert r.verdict == REPRODUCED and "0.8 × reference" in r.test
    assert (r.reference_mean, r.ours_mean) == pytest.approx((0.65, 0.60))  # the reference as measured
    lower = decide([1.05, 1.04, 1.06], [1.0, 1.0, 1.0], higher_is_better=False, alpha=0.05, margin=0.1)
    assert lower.verdict == REPRODUCED and "1.1 × reference" in lower.test  # ≤ 10 % slower counts

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


def test_paired_hand_computed_case():
    # matched seeds 0, 1, 2: differences d = [1, 2, 3], mean 2, sd 1 → t = 2 / (1 / sqrt(3)) = 3.4641, df = 2
    a, b = [2.0, 4.0, 6.0], [1.0, 2.0, 3.0]
    expected = float(stats.t.sf(2 / (1 / math.sqrt(3)), 2))  # ≈ 0.037
    r = decide(a, b, higher_is_better=True, alpha=0.05, ours_seeds=[0, 1, 2], reference_seeds=[0, 1, 2])
    assert r.p_value == pytest.approx(expected, rel=1e-9)
    assert r.p_value == pytest.approx(float(stats.ttest_rel(a, b, alternative="greater").pvalue), rel=1e-9)
    assert "paired" in r.test and "one-sided" in r.test and ">" in r.test
    assert (r.ours_mean, r.ours_std, r.reference_mean, r.reference_std) == pytest.approx((4, 2, 2, 1))
    assert (r.n_ours, r.n_reference) == (3, 3)
    assert r.verdict == REPRODUCED  # the same values unpaired (Welch) give p ≈ 0.11: inconclusive
    # lower is better: the lower-tail test of the same differences
    low = decide(b, a, higher_is_better=False, alpha=0.05, ours_seeds=[0, 1, 2], reference_seeds=[0, 1, 2])
    assert low.p_value == pytest.approx(expected, rel=1e-9) and "<" in low.test and low.verdict == REPRODUCED


def test_paired_by_seed_not_by_position():
    # the reference lists its seeds in another order; pairing must follow the seeds
    r = decide([2.0, 4.0, 6.0], [3.0, 1.0, 2.0], True, 0.05, ours_seeds=[0, 1, 2], reference_seeds=[2, 0, 1])
    assert r.p_value == pytest.approx(float(stats.t.sf(2 * math.sqrt(3), 2)), rel=1e-9)


def test_paired_constant_difference_is_exact():
    r = decide([1.0, 2.0, 4.0], [0.0, 1.0, 3.0], True, 0.05, ours_seeds=[0, 1, 2], reference_seeds=[0, 1, 2])
    assert r.verdict == REPRODUCED and r.p_value == 0.0 and "paired" in r.test


@pytest.mark.parametrize(
    ("ours_seeds", "reference_seeds"),
    [
        ([0, 1, 2], [0, 1, 3]),
        ([0, 1, 2], [0, 1]),
        ([0, 1, 2], None),
        ([None, None, None], [None, None, None]),
        ([0, 0, 1], [0, 1, 1]),
    ],
)
def test_unmatched_seeds_fall_back_to_welch(ours_seeds, reference_seeds):
    a = [2.0, 4.0, 6.0]
    b = [1.0, 2.0, 3.0][: len(reference_seeds)] if reference_seeds is not None else [1.0, 2.0, 3.0]
    r = decide(a, b, True, 0.05, ours_seeds=ours_seeds, reference_seeds=reference_seeds)
    assert "Welch" in r.test and "paired" not in r.test
    assert r.p_value == pytest.approx(welch_p_greater(a, b), rel=1e-9)


# --- the effect size: difference of means and its 95 % interval, against scipy's own intervals -----------


def test_paired_interval_matches_scipy_and_follows_the_seeds():
    a, b = [0.61, 0.64, 0.60, 0.66], [0.55, 0.60, 0.58, 0.57]  # b listed in seed order 3, 0, 1, 2 below
    r = decide(a, [b[3], b[0], b[1], b[2]], True, 0.05, ours_seeds=[0, 1, 2, 3], reference_seeds=[3, 0, 1, 2])
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert r.difference == pytest.approx(statistics.mean(a) - statistics.mean(b), rel=1e-12)
    assert (r.ci_low, r.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_welch_interval_matches_scipy():
    a, b = [0.80, 0.82, 0.84], [0.70, 0.71, 0.72, 0.75]
    r = decide(a, b, True, 0.05)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert "Welch" in r.test and (r.ci_low, r.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-9)


def test_interval_is_around_the_raw_difference_under_a_margin():
    a, b = [0.41, 0.415, 0.42], [0.42, 0.44, 0.43]
    r = decide(a, b, True, 0.05, ours_seeds=[0, 1, 2], reference_seeds=[0, 1, 2], margin=0.1)
    ci = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert r.verdict == REPRODUCED  # 0.415 > 0.9 × 0.43, though ours is below the reference
    assert r.difference == pytest.approx(-0.015) and (r.ci_low, r.ci_high) == pytest.approx((ci.low, ci.high))


def test_interval_without_spread_is_the_point_and_without_seeds_absent():
    r = decide([1.0, 2.0, 4.0], [0.0, 1.0, 3.0], True, 0.05, ours_seeds=[0, 1, 2], reference_seeds=[0, 1, 2])
    assert r.ci_low == r.ci_high == pytest.approx(1.0)
    r = decide([0.9], [0.1, 0.2], True, 0.05)
    assert r.difference == pytest.approx(0.75) and math.isnan(r.ci_low) and math.isnan(r.ci_high)


def test_seed_count_must_match_values():
    with pytest.raises(ValueError, match="3 values but 2 seeds"):
        decide([1.0, 2.0, 3.0], [0.0, 1.0, 2.0], True, 0.05, ours_seeds=[0, 1], reference_seeds=[0, 1, 2])


def _collection(runs: dict[str, dict[int, float]]) -> Collection:
    claim = {
        "paper": "AMC",
        "claim": "c",
        "metric": "m",
        "variant": "amc",
        "reference_variant": "base",
        "higher_is_better": True,
    }
    # both variants clear an absolute bar of 0.5 (their means are 4 and 2), so the t-test decides the claim
    gates = [
        {"paper": "AMC", "variant": v, "metric": "m", "control": "none", "control_value": 0.0, "rule": "min",
         "margin": 0.5}
        for v in ("amc", "base")
    ]  # fmt: skip
    files = [
        MetricsFile(f"amc/{v}-{seed}.json", "amc", v, seed, {"m": x}, [claim], None, gates)
        for v, seeds in runs.items()
        for seed, x in seeds.items()
    ]
    values = pd.DataFrame(
        [(f.stage, f.variant, f.seed, "m", f.metrics["m"], f.file) for f in files], columns=VALUE_COLUMNS
    ).astype({"seed": "Int64", "value": "float64"})
    return Collection(files, values)


def test_ledger_pairs_matched_seeds_and_records_the_test():
    paired = claims_ledger(_collection({"amc": {0: 2.0, 1: 4.0, 2: 6.0}, "base": {2: 3.0, 0: 1.0, 1: 2.0}}), 0.05)
    row = paired.iloc[0]
    assert row["test"].startswith("paired t-test") and row["n_seeds"] == 3
    assert row["p_value"] == pytest.approx(float(stats.t.sf(2 * math.sqrt(3), 2)), rel=1e-9)
    assert row["verdict"] == REPRODUCED and row["gates"] == "passed"
    welch = claims_ledger(_collection({"amc": {0: 2.0, 1: 4.0, 2: 6.0}, "base": {0: 1.0, 1: 2.0, 5: 3.0}}), 0.05)
    row = welch.iloc[0]
    assert row["test"].startswith("Welch t-test")
    assert row["p_value"] == pytest.approx(welch_p_greater([2.0, 4.0, 6.0], [1.0, 2.0, 3.0]), rel=1e-9)
    assert row["verdict"] == INCONCLUSIVE


def test_ledger_compares_two_metrics_of_one_variant_paired_by_seed():
    # one model scored two ways per seed ("richer prompts help"): m2 vs m on variant amc, matched seeds
    claim = {"paper": "AMC", "claim": "c", "metric": "m2", "variant": "amc", "reference_variant": "amc",
             "reference_metric": "m", "higher_is_better": True}  # fmt: skip
    gate = {"paper": "AMC", "variant": "amc", "metric": "m", "control": "none", "control_value": 0.0, "rule": "min",
            "margin": 0.5}  # fmt: skip
    m, m2 = {0: 1.0, 1: 2.0, 2: 3.0}, {0: 2.0, 1: 4.0, 2: 6.0}
    files = [MetricsFile(f"amc/amc-{s}.json", "amc", "amc", s, {"m": m[s], "m2": m2[s]}, [claim], None, [gate])
             for s in m]  # fmt: skip
    values = pd.DataFrame(
        [(f.stage, f.variant, f.seed, k, f.metrics[k], f.file) for f in files for k in ("m", "m2")],
        columns=VALUE_COLUMNS,
    ).astype({"seed": "Int64", "value": "float64"})
    row = claims_ledger(Collection(files, values), 0.05).iloc[0]
    # differences 1, 2, 3: mean 2, sd 1 -> t = 2 sqrt(3), 2 df
    assert row["test"].startswith("paired t-test") and (row["ours_mean"], row["reference_mean"]) == (4.0, 2.0)
    assert row["p_value"] == pytest.approx(float(stats.t.sf(2 * math.sqrt(3), 2)), rel=1e-9)
    assert row["reference_metric"] == "m" and row["verdict"] == REPRODUCED and row["gates"] == "passed"
    from vlrepro.report.tables import claims_table

    assert claims_table(pd.DataFrame([row])).iloc[0]["compared with"].startswith("amc (m): ")
    same = {**claim, "reference_metric": "m2"}  # the same variant on the same metric compares nothing
    files = [MetricsFile("amc/amc-0.json", "amc", "amc", 0, {"m2": 1.0}, [same], None, [gate])]
    with pytest.raises(ClaimError, match="compares 'amc' with itself on 'm2'"):
        claims_ledger(Collection(files, values), 0.05)
