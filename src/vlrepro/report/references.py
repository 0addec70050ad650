"""Paper-reported numbers: load and validate ``references.yaml`` (package data, next to this module).

The file is a YAML list with one entry per number; its header comment lists the fields. Entries are
validated with pydantic in strict mode, so a typo stops the report with a message naming the entry::

    references.yaml entry 12 (SMCIM / SeqTR / RefCOCO testA / Acc@0.5): field 'value': Input should be ...

These numbers are never mixed with ours: the report prints them in a section of their own.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vlrepro.report.gate_rows import PAPERS, Paper  # noqa: F401  (the paper names, defined once)


class ReferencesError(ValueError):
    """A problem in the references file, naming the entry and the field."""


class Reference(BaseModel):
    """One paper-reported number."""

    # strict: a quoted "86.49" or a misspelt key is an error rather than silently coerced or dropped
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    paper: Paper
    role: Literal["method", "baseline", "ablation", "peer"]
    method: str = Field(min_length=1)
    benchmark: str = Field(min_length=1)
    split: str | None = None
    metric: str = Field(min_length=1)
    value: float | None
    std: float | None = Field(None, ge=0)
    unit: Literal["%", "fraction", "score", "M params", "count"]
    source: str = Field(min_length=1)
    flags: list[Literal["unverified", "derived", "approximate"]] = []
    note: str | None = None

    @model_validator(mode="after")
    def _missing_value_is_explained(self) -> Reference:
        if self.value is None and not self.note:
            raise ValueError("value is null (not available): give a `note` saying why")
        if self.value is None and self.std is not None:
            raise ValueError("std given without a value")
        return self


def default_path() -> Path:
    return Path(str(resources.files("vlrepro.report").joinpath("references.yaml")))


def _label(i: int, raw: object) -> str:
    """'entry 12 (SMCIM / SeqTR / RefCOCO testA / Acc@0.5)', as far as the raw entry allows."""
    if not isinstance(raw, dict):
        return f"entry {i}"
    bench = " ".join(str(raw[k]) for k in ("benchmark", "split") if raw.get(k))
    parts = [str(raw[k]) for k in ("paper", "method") if raw.get(k)] + ([bench] if bench else [])
    parts += [str(raw["metric"])] if raw.get("metric") else []
    return f"entry {i} ({' / '.join(parts)})"


def load_references(path: str | Path | None = None) -> list[Reference]:
    """Read and validate the references file (default: the packaged ``references.yaml``), in file order."""
    path = Path(path) if path else default_path()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReferencesError(f"{path}: not found") from None
    except yaml.YAMLError as e:
        raise ReferencesError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, list):
        raise ReferencesError(f"{path}: expected a list of entries at the top level, got {type(raw).__name__}")

    refs: list[Reference] = []
    for i, entry in enumerate(raw, start=1):
        if not isinstance(entry, dict):
            raise ReferencesError(f"{path.name} {_label(i, entry)}: expected a mapping, got {entry!r}")
        try:
            refs.append(Reference.model_validate(entry))
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "(entry)"
            raise ReferencesError(f"{path.name} {_label(i, entry)}: field '{field}': {err['msg']}") from None

    # the same number from the same source twice is a copy-paste slip that would show up as a duplicate row
    seen: dict[tuple, int] = {}
    for i, r in enumerate(refs, start=1):
        key = (r.paper, r.method, r.benchmark, r.split, r.metric, r.source)
        if key in seen:
            raise ReferencesError(f"{path.name} {_label(i, raw[i - 1])}: duplicates entry {seen[key]}")
        seen[key] = i
    return refs


def references_frame(refs: list[Reference]) -> pd.DataFrame:
    """One row per reference, columns in the schema's order (flags joined with ', ')."""
    rows = [{**r.model_dump(), "flags": ", ".join(r.flags)} for r in refs]
    return pd.DataFrame(rows, columns=list(Reference.model_fields))
