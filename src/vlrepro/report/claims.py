"""The claims ledger: one verdict per paper claim, with the test that decided it.

Claim rows
----------
A stage states the claims its runs can decide in the optional ``"claims"`` list of its metrics JSON
(``vlrepro.io.write_metrics(..., claims=[...])``). A row names *what* to compare, never the numbers::

    {"paper": "AMC", "claim": "AMC beats the same model trained without it (pointing game)",
     "metric": "refcoco+.testA.pointing", "variant": "amc", "reference_variant": "no_amc",
     "higher_is_better": true}

- ``metric`` is the dotted name of a metric in that stage's files (nesting joined with ``.``);
- ``variant`` / ``reference_variant`` are ``"variant"`` values of files of the same stage (an optional
  ``"stage"`` key points the claim at another stage);
- ``higher_is_better`` gives the claimed direction (``false`` for e.g. Deletion AUC or latency);
- an optional ``reference_metric`` compares ``metric`` with another metric of the reference variant, which
  may then be the same variant: one model scored two ways ("richer prompts help novel classes": AP with the
  richer prompts vs AP with the class names, both from each seed's run, paired by seed);
- an optional ``margin`` m (0 ≤ m < 1) makes it a claim that ours *approaches* the reference ("prompt
  tuning almost matches fine-tuning"): ours beats (1 − m) × reference (higher is better) or
  (1 + m) × reference (lower is better), a non-inferiority test. Without it, m = 0: ours beats the reference.

The per-seed values are looked up from the collected metrics, so the ledger and the tables always show
the same numbers and a stage does not have to gather other runs' results. Every seed file of a stage may
carry the same row (identical rows count once), so a matrix stage can write them without coordination.

Test
----
One-sided in the claimed direction, because a paper claim is directional. Which t-test depends on the
seeds (the ``test`` column of the ledger says which one decided the row):

- **paired t-test** (``scipy.stats.ttest_rel(..., alternative=...)``) when both sides ran with the same
  set of seeds. The seed fixes data order and initialisation for both variants, so the runs of one seed
  are matched and the per-seed differences carry the effect without the seed-to-seed spread they share;
  treating them as independent samples would waste that pairing (and misstate p). Values are paired by
  seed, not by position.
- **Welch's two-sample t-test** (``scipy.stats.ttest_ind(..., equal_var=False, alternative=...)``)
  otherwise (different seed sets, or runs without a seed): the sides are then independent samples, and
  Welch because the variants need not have equal variance across seeds (a regulariser such as AMC may well
  change it).

Verdicts
--------
A model that has not learned proves nothing: two untrained variants differ only by noise, and a test of that
difference says nothing about the paper. So before the test, each variant of a claim must pass the learning
gates its stage defines for it (:mod:`vlrepro.report.gates`: e.g. REC accuracy at least twice that of a
random scene object's box):

- ``not testable`` when either variant (in the claim's stage) fails one of its gates, or has no gate at all:
  without a gate there is no evidence that it learned, so its absence counts against the claim rather than
  for it. The ledger's ``gates`` column says which (``failed: transformer (refcoco.val.acc@0.5 0.21 <
  bar 0.48)``, ``none defined for full``) or ``passed``. The test is still run and its means and p kept in
  the row, so a reader can see what the claim would have gotten.
- ``not testable`` also when a variant has no run at all in the stage yet (``no runs of shallow yet``,
  statistics empty): a long matrix may be finished over several sessions, and the report must still build.
  A variant that has runs but lacks the claim's metric is still an error (a misspelt metric name).

Otherwise the test decides (the same rule for both tests):

- ``inconclusive`` with fewer than 2 seeds on either side (no variance estimate, no test is run);
- ``not reproduced`` when the mean difference is zero or in the wrong direction;
- ``reproduced`` when it is in the claimed direction and p < alpha;
- ``inconclusive`` when it is in the claimed direction but p ≥ alpha.

In ``claims.csv`` ``n_seeds`` is the smaller of the two sides' seed counts (the one that limits the test);
``n_ours`` and ``n_reference`` give both. Means and stds are over seeds (sample std, ddof=1).

Effect size: ``difference`` = mean of ours − mean of the reference (the raw difference, without the margin),
and ``ci_low`` / ``ci_high`` its two-sided 95 % confidence interval: from the per-seed differences (paired,
n − 1 degrees of freedom) or Welch's (Welch–Satterthwaite degrees of freedom), as the test pairs them. With a
margin the test's differences are taken against (1 ∓ m) × reference instead, so the interval and the test
may then disagree. The interval is two-sided at 95 % while the test is one-sided at alpha: a claim can be
``reproduced`` (p < 0.05) with an interval that reaches just below 0. With fewer than 2 seeds on a side
there is no interval (NaN); with zero spread it is the point.

When the spread the test divides by is zero (both sides' for Welch, the per-seed differences' for the
paired test) the t statistic is undefined; the difference of means is then exact, so p is taken as 0
(claimed direction) or 1 (otherwise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from scipy import stats

from vlrepro.report.collect import Collection
from vlrepro.report.gates import evaluate_gates, gate_verdict
from vlrepro.report.references import Paper

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
NOT_TESTABLE = "not testable"  # a variant of the claim failed its learning gates or has none
VERDICTS: tuple[str, ...] = (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, NOT_TESTABLE)

# The first 13 are the convention other tools rely on (README, "What you get"); the rest help a reader check the row.
LEDGER_COLUMNS: list[str] = [
    "paper", "claim", "metric", "variant", "reference_variant",
    "ours_mean", "ours_std", "reference_mean", "reference_std", "n_seeds",
    "test", "p_value", "verdict",
    "stage", "higher_is_better", "n_ours", "n_reference", "alpha", "gates",
    "difference", "ci_low", "ci_high", "reference_metric",
]  # fmt: skip
CONFIDENCE = 0.95  # of the interval around the difference of means


class ClaimError(ValueError):
    """A claim row that cannot be decided (malformed, or pointing at metrics that do not exist)."""


class ClaimRow(BaseModel):
    """The row format a stage writes into its metrics JSON (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    paper: Paper
    claim: str = Field(min_length=1)
    metric: str = Field(min_length=1)
    variant: str = Field(min_length=1)
    reference_variant: str = Field(min_length=1)
    higher_is_better: bool
    margin: float = Field(0.0, ge=0, lt=1)  # relative non-inferiority margin (module docstring)
    reference_metric: str | None = Field(None, min_length=1)  # the reference side's metric (default: ``metric``)
    stage: str | None = None  # default: the stage of the file carrying the row

    @property
    def sides(self) -> tuple[tuple[str, str], tuple[str, str]]:
        """(variant, metric) of ours and of the reference."""
        return (self.variant, self.metric), (self.reference_variant, self.reference_metric or self.metric)


@dataclass(frozen=True)
class ClaimTest:
    ours_mean: float
    ours_std: float
    reference_mean: float
    reference_std: float
    n_ours: int
    n_reference: int
    test: str
    p_value: float  # NaN when no test was run
    verdict: str
    difference: float = math.nan  # mean of ours − mean of the reference
    ci_low: float = math.nan  # CONFIDENCE interval of the difference (NaN without a test)
    ci_high: float = math.nan


def _mean_std(x: np.ndarray) -> tuple[float, float]:
    mean = float(x.mean()) if len(x) else math.nan
    return mean, float(x.std(ddof=1)) if len(x) > 1 else math.nan


def matched_seeds(ours_seeds: Sequence[int | None] | None, reference_seeds: Sequence[int | None] | None) -> bool:
    """Whether two sides' runs are matched: every run has a seed, no seed repeats, and the sets are equal."""
    if ours_seeds is None or reference_seeds is None:
        return False
    sides = [list(ours_seeds), list(reference_seeds)]
    if any(seed is None for side in sides for seed in side):
        return False
    return all(len(set(side)) == len(side) for side in sides) and set(sides[0]) == set(sides[1])


def decide(
    ours: Sequence[float],
    reference: Sequence[float],
    higher_is_better: bool,
    alpha: float,
    ours_seeds: Sequence[int | None] | None = None,
    reference_seeds: Sequence[int | None] | None = None,
    margin: float = 0.0,
) -> ClaimTest:
    """Decide "ours beats reference" from per-seed values with a one-sided t-test at level ``alpha``.

    With ``ours_seeds``/``reference_seeds`` (the seed of each value) naming the same set of seeds on both
    sides, the values are paired by seed and the paired t-test decides; otherwise Welch's t-test. With
    ``margin`` m, ours is tested against (1 ∓ m) × reference (non-inferiority); the reported reference mean
    and std stay the reference's own.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    a, b = np.asarray(ours, dtype=float), np.asarray(reference, dtype=float)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("per-seed values must be finite numbers")
    for values, seeds, side in ((a, ours_seeds, "ours"), (b, reference_seeds, "reference")):
        if seeds is not None and len(seeds) != len(values):
            raise ValueError(f"{side}: {len(values)} values but {len(seeds)} seeds")
    (m_a, s_a), (m_b, s_b) = _mean_std(a), _mean_std(b)
    direction = "greater" if higher_is_better else "less"
    raw_b = b
    if margin:
        b = b * ((1 - margin) if higher_is_better else (1 + margin))  # the bar ours must clear

    def result(test: str, p: float, verdict: str, ci: tuple[float, float] = (math.nan, math.nan)) -> ClaimTest:
        return ClaimTest(
            ours_mean=m_a, ours_std=s_a, reference_mean=m_b, reference_std=s_b, n_ours=len(a), n_reference=len(b),
            test=test, p_value=p, verdict=verdict, difference=m_a - m_b, ci_low=ci[0], ci_high=ci[1],
        )  # fmt: skip

    if len(a) < 2 or len(b) < 2:
        return result("none (fewer than 2 seeds on a side)", math.nan, INCONCLUSIVE)

    gain = (m_a - b.mean()) if higher_is_better else (b.mean() - m_a)  # > 0: the claimed direction
    scale = f"{(1 - margin) if higher_is_better else (1 + margin):g} × " if margin else ""
    sided = f"one-sided (ours {'>' if higher_is_better else '<'} {scale}reference)"
    if matched_seeds(ours_seeds, reference_seeds):
        test = f"paired t-test, {sided}"
        position = {seed: i for i, seed in enumerate(reference_seeds)}
        paired = [position[seed] for seed in ours_seeds]
        b_paired = b[paired]
        if np.ptp(a - b_paired) == 0:
            p = 0.0 if gain > 0 else 1.0
        else:
            p = float(stats.ttest_rel(a, b_paired, alternative=direction).pvalue)
        diffs = a - raw_b[paired]  # the interval is around the raw difference, without the margin
        se, df = float(diffs.std(ddof=1)) / math.sqrt(len(diffs)), len(diffs) - 1
    else:
        test = f"Welch t-test, {sided}"
        if s_a == 0 and s_b == 0:
            p = 0.0 if gain > 0 else 1.0
        else:
            p = float(stats.ttest_ind(a, b, equal_var=False, alternative=direction).pvalue)
        va, vb = s_a**2 / len(a), s_b**2 / len(b)
        se = math.sqrt(va + vb)
        df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if se else 1
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df)) * se
    ci = (m_a - m_b - half, m_a - m_b + half)
    if gain <= 0:
        return result(test, p, NOT_REPRODUCED, ci)
    return result(test, p, REPRODUCED if p < alpha else INCONCLUSIVE, ci)


def claim_rows(collection: Collection) -> list[ClaimRow]:
    """Every distinct claim row of the collection (stage filled in), sorted; conflicting copies are errors."""
    found: dict[tuple, tuple[ClaimRow, str]] = {}
    for f in collection.files:
        for i, raw in enumerate(f.claims):
            try:
                row = ClaimRow.model_validate({"stage": f.stage, **raw})
            except ValidationError as e:
                err = e.errors()[0]
                field = ".".join(str(p) for p in err["loc"]) or "(row)"
                raise ClaimError(f"{f.file}: claims[{i}]: field '{field}': {err['msg']}") from None
            if row.sides[0] == row.sides[1]:
                raise ClaimError(f"{f.file}: claims[{i}]: compares {row.variant!r} with itself on {row.metric!r}; "
                                 f"name another reference_variant or a reference_metric")
            key = (row.stage, row.paper, row.claim, row.metric, row.variant, row.reference_variant,
                   row.reference_metric or row.metric)  # fmt: skip
            if key in found and found[key][0] != row:
                raise ClaimError(f"{f.file}: claims[{i}] contradicts the same claim in {found[key][1]}")
            found.setdefault(key, (row, f.file))
    return [found[k][0] for k in sorted(found)]


def claims_ledger(collection: Collection, alpha: float, gates: pd.DataFrame | None = None) -> pd.DataFrame:
    """Decide every claim in the collection; one row per claim in ``LEDGER_COLUMNS`` order, sorted.

    ``gates`` is :func:`vlrepro.report.gates.evaluate_gates` of the same collection (evaluated here when
    not given); a claim whose variants do not all pass theirs is ``not testable``.
    """
    if gates is None:
        gates = evaluate_gates(collection)
    per_seed = {
        key: group.sort_values("seed")[["seed", "value"]]
        for key, group in collection.values.groupby(["stage", "variant", "metric"], sort=True)
    }
    ran = {(f.stage, f.variant) for f in collection.files if f.metrics}
    empty = {(f.stage, f.variant) for f in collection.files if not f.metrics}  # recorded why it did not train
    rows = []
    for row in claim_rows(collection):
        missing = [v for v in (row.variant, row.reference_variant) if (row.stage, v) not in ran]
        if missing:  # a matrix finished in part (runs spread over sessions), or a stage that could not train
            idle = [v for v in missing if (row.stage, v) in empty]
            later = [v for v in missing if v not in idle]
            why = [f"no runs of {' and '.join(later)} yet"] if later else []
            why += [f"{' and '.join(idle)} recorded no metrics (not run)"] if idle else []
            rows.append(_untested(row, alpha, "; ".join(why)))
            continue
        sides = []
        for variant, metric in row.sides:
            runs = per_seed.get((row.stage, variant, metric))
            if runs is None:
                raise ClaimError(
                    f"claim {row.claim!r} ({row.paper}): no values of metric {metric!r} for variant "
                    f"{variant!r} in stage {row.stage!r}; variants there: {_variants(collection, row.stage)}"
                )
            seeds = [None if pd.isna(s) else int(s) for s in runs["seed"]]
            sides.append((runs["value"].to_numpy(), seeds))
        (ours, ours_seeds), (reference, reference_seeds) = sides
        t = decide(ours, reference, row.higher_is_better, alpha, ours_seeds, reference_seeds, row.margin)
        learned, gate_text = gate_verdict(gates, row.stage, tuple(dict.fromkeys((row.variant, row.reference_variant))))
        rows.append(
            {
                **row.model_dump(exclude={"stage", "higher_is_better"}),
                "reference_metric": row.sides[1][1],
                "ours_mean": t.ours_mean,
                "ours_std": t.ours_std,
                "reference_mean": t.reference_mean,
                "reference_std": t.reference_std,
                "n_seeds": min(t.n_ours, t.n_reference),
                "test": t.test,
                "p_value": t.p_value,
                "verdict": t.verdict if learned else NOT_TESTABLE,
                "stage": row.stage,
                "higher_is_better": row.higher_is_better,
                "n_ours": t.n_ours,
                "n_reference": t.n_reference,
                "alpha": alpha,
                "gates": gate_text,
                "difference": t.difference,
                "ci_low": t.ci_low,
                "ci_high": t.ci_high,
            }
        )
    ledger = pd.DataFrame(rows, columns=LEDGER_COLUMNS)
    return ledger.sort_values(["paper", "claim", "metric", "variant", "reference_variant"], ignore_index=True)


def _untested(row: ClaimRow, alpha: float, why: str) -> dict:
    nan = float("nan")
    stats_ = dict.fromkeys(
        ("ours_mean", "ours_std", "reference_mean", "reference_std", "p_value", "difference", "ci_low", "ci_high"), nan
    )
    return {**row.model_dump(exclude={"stage", "higher_is_better"}), "reference_metric": row.sides[1][1], **stats_,
            "n_seeds": 0, "test": "",
            "verdict": NOT_TESTABLE, "stage": row.stage, "higher_is_better": row.higher_is_better, "n_ours": 0,
            "n_reference": 0, "alpha": alpha, "gates": why}  # fmt: skip


def _variants(collection: Collection, stage: str) -> str:
    names = sorted({f.variant for f in collection.files if f.stage == stage})
    return ", ".join(names) if names else "(stage has no files)"


def ledger_csv(ledger: pd.DataFrame) -> str:
    """The ledger as CSV text; 6 significant digits so the file is stable across platforms."""
    return ledger.to_csv(index=False, float_format="%.6g", lineterminator="\n")
