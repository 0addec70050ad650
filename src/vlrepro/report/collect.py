"""Read every metrics JSON under a folder into one tidy DataFrame.

The file convention is in :mod:`vlrepro.io`. Nested metrics are flattened to dotted names
(``{"refcoco": {"val": {"acc@0.5": 0.7}}}`` → ``refcoco.val.acc@0.5``), which is also the name a claim
row uses. Only numbers are accepted as leaves: a string or list is an error naming the file and key,
because the report would otherwise drop it without anyone noticing.

For tables and figures a name splits into a *prefix* and a *quantity*, its last component
(:func:`split_metric`): ``refcocog.val.acc@0.5`` → ``refcocog.val`` and ``acc@0.5``. A dot followed by a
digit stays inside a component, so thresholds like ``acc@0.5`` are kept whole; a top-level name
(``noisy``) has the empty prefix, shown as ``(top level)``. Prefixes sort component by component
(:func:`prefix_key`): ``refcoco.val`` < ``refcoco+.val`` < ``refcocog.val`` and ``testA`` < ``testB`` < ``val``,
so the order depends neither on the order of keys in the files nor on which file was read first.

A run without a variant gets the variant label ``—`` so that single-run stages group like the others.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from vlrepro.io import read_json

NO_VARIANT = "—"
NO_PREFIX = "(top level)"  # the label of the empty prefix of a top-level metric name
# Pipeline order from the design; stages not listed follow alphabetically.
STAGE_ORDER: tuple[str, ...] = ("data", "pretrain", "amc", "smcim", "glip", "ala", "blip", "report")
VALUE_COLUMNS = ["stage", "variant", "seed", "metric", "value", "file"]


class MetricsError(ValueError):
    """A metrics file that does not follow the convention; the message names the file."""


@dataclass(frozen=True)
class MetricsFile:
    file: str  # relative to the metrics folder, POSIX style, so reports do not depend on where they were built
    stage: str
    variant: str
    seed: int | None
    metrics: dict[str, float]
    claims: list[dict[str, Any]]
    figure: dict[str, Any] | None
    gates: list[dict[str, Any]] = field(default_factory=list)  # learning gates, see vlrepro.report.gates


@dataclass(frozen=True)
class Collection:
    files: list[MetricsFile]
    values: pd.DataFrame  # one row per (file, metric): VALUE_COLUMNS


_COMPONENT_DOT = re.compile(r"\.(?=\D)")  # a dot that separates components (not the one in 'acc@0.5')


def split_metric(metric: str) -> tuple[str, str]:
    """'refcocog.val.acc@0.5' → ('refcocog.val', 'acc@0.5'); 'noisy' → ('', 'noisy')."""
    parts = _COMPONENT_DOT.split(metric)
    return ".".join(parts[:-1]), parts[-1]


def prefix_key(prefix: str) -> tuple[str, ...]:
    """Sort key of a prefix: its components (the empty prefix first)."""
    return tuple(_COMPONENT_DOT.split(prefix)) if prefix else ()


def prefix_label(prefix: str) -> str:
    return prefix or NO_PREFIX


def flatten(metrics: dict[str, Any], where: str, prefix: str = "") -> dict[str, float]:
    """Nested mapping of numbers → {dotted name: float}; ``where`` names the file in errors."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            inner = flatten(value, where, name + ".")
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            inner = {name: float(value)}
        else:
            raise MetricsError(f"{where}: metrics.{name} = {value!r}: expected a finite number or a nested mapping")
        for k in inner:
            if k in out:
                raise MetricsError(f"{where}: metric {k!r} appears twice (once nested, once dotted)")
        out.update(inner)
    return out


def read_metrics_file(path: Path, root: Path) -> MetricsFile:
    """Read and check one metrics JSON; ``root`` is the metrics folder its name is shown relative to."""
    rel = path.relative_to(root).as_posix()
    expected = (
        'expected {"stage": str, "metrics": {...numbers...}, "variant"?, "seed"?, "claims"?, "gates"?, "figure"?}'
    )
    try:
        doc = read_json(path)
    except ValueError as e:
        raise MetricsError(f"{e}; {expected}") from None
    if not isinstance(doc, dict):
        raise MetricsError(f"{path}: top level is {type(doc).__name__}; {expected}")
    stage, metrics = doc.get("stage"), doc.get("metrics")
    if not isinstance(stage, str) or not stage:
        raise MetricsError(f"{path}: missing or invalid 'stage' ({stage!r}); {expected}")
    if not isinstance(metrics, dict):
        raise MetricsError(f"{path}: missing or invalid 'metrics' ({type(metrics).__name__}); {expected}")
    variant, seed = doc.get("variant"), doc.get("seed")
    if variant is not None and (not isinstance(variant, str) or not variant):
        raise MetricsError(f"{path}: 'variant' must be a non-empty string or null, got {variant!r}")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise MetricsError(f"{path}: 'seed' must be an integer or null, got {seed!r}")
    claims = doc.get("claims") or []
    if not isinstance(claims, list) or not all(isinstance(c, dict) for c in claims):
        raise MetricsError(f"{path}: 'claims' must be a list of claim rows (mappings)")
    gates = doc.get("gates") or []
    if not isinstance(gates, list) or not all(isinstance(g, dict) for g in gates):
        raise MetricsError(f"{path}: 'gates' must be a list of gate rows (mappings)")
    figure = doc.get("figure")
    if figure is not None and not isinstance(figure, dict):
        raise MetricsError(f'{path}: \'figure\' must be a mapping such as {{"metrics": [...], "title": ...}}')
    return MetricsFile(
        file=rel,
        stage=stage,
        variant=variant or NO_VARIANT,
        seed=seed,
        metrics=flatten(metrics, str(path)),
        claims=claims,
        figure=figure,
        gates=gates,
    )


def collect(metrics_dir: str | Path) -> Collection:
    """Read ``metrics_dir/**/*.json`` (hidden files skipped), sorted by path, into a :class:`Collection`."""
    root = Path(metrics_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: metrics folder not found")
    paths = sorted(
        p
        for p in root.rglob("*.json")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not paths:
        raise MetricsError(f"{root}: no metrics JSON files (expected <stage>.json or <stage>/<variant>-<seed>.json)")
    files = [read_metrics_file(p, root) for p in paths]

    # Two files for the same run would count one seed twice in every mean and test.
    seen: dict[tuple, str] = {}
    for f in files:
        key = (f.stage, f.variant, f.seed)
        if key in seen:
            raise MetricsError(
                f"{root / f.file}: same stage/variant/seed {key} as {root / seen[key]}; each run needs one file"
            )
        seen[key] = f.file

    rows = [(f.stage, f.variant, f.seed, m, v, f.file) for f in files for m, v in f.metrics.items()]
    values = pd.DataFrame(rows, columns=VALUE_COLUMNS).astype({"seed": "Int64", "value": "float64"})
    return Collection(files=files, values=values)


def ordered_stages(stages: set[str] | list[str]) -> list[str]:
    known = [s for s in STAGE_ORDER if s in stages]
    return known + sorted(set(stages) - set(STAGE_ORDER))


def summarize(values: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std (ddof=1; NaN for one seed) and n over seeds per stage, variant and metric, sorted."""
    columns = ["stage", "variant", "metric", "mean", "std", "n"]
    if values.empty:
        return pd.DataFrame(columns=columns)
    out = values.groupby(["stage", "variant", "metric"], sort=True)["value"].agg(["mean", "std", "count"])
    return out.rename(columns={"count": "n"}).reset_index()[columns]
