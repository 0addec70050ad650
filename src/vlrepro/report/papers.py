"""What the report says about each paper besides our numbers: load and validate ``papers.yaml`` (package data).

One card per paper of :data:`vlrepro.report.references.PAPERS`: its title, the stages whose metrics belong to
it, what it claims, the data each profile uses, caveats, and the *main tables* that set our numbers beside
the paper's. A main table maps the paper's method names (as ``references.yaml`` spells them) to our variants,
and the paper's benchmark / split / metric to our metric names, so the report can look both up rather than
carry any number itself. A typo stops the report with a message naming the paper and the field: on the
paper's side (:func:`check_against_references`); on ours, a metric the runs lack is named under its table.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vlrepro.report.references import PAPERS, Reference


class PapersError(ValueError):
    """A problem in the paper cards file, naming the paper and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Column(_Strict):
    """A paper's benchmark / split / metric (all null: a column only we have) and our metric beside it."""

    benchmark: str | None
    split: str | None
    metric: str | None
    ours: str = Field(min_length=1)

    def label(self) -> str:
        return " ".join(p for p in (self.benchmark, self.split, self.metric) if p) or "—"


class MainTable(_Strict):
    title: str = Field(min_length=1)
    stage: str = Field(min_length=1)
    rows: dict[str, str | None]  # the paper's method name → our variant (None: the paper's row only)
    extra_rows: dict[str, str] = {}  # label → our variant, rows the paper's table has no transcribed number for
    columns: list[Column] = Field(min_length=1)


class Data(_Strict):
    world: str = Field(min_length=1)  # profiles smoke and default
    paper: str = Field(min_length=1)  # the paper profile


class Caveats(_Strict):
    every: list[str] = []  # every profile
    world: list[str] = []  # profiles smoke and default
    paper: list[str] = []  # the paper profile


class PaperCard(_Strict):
    title: str = Field(min_length=1)
    doc: str = Field(min_length=1)
    stages: list[str] = Field(min_length=1)
    claims: list[str] = Field(min_length=1)
    data: Data
    caveats: Caveats = Caveats()
    tables: list[MainTable] = []

    def data_for(self, profile: str) -> str:
        return self.data.paper if profile == "paper" else self.data.world

    def caveats_for(self, profile: str) -> list[str]:
        return [*self.caveats.every, *(self.caveats.paper if profile == "paper" else self.caveats.world)]


def default_path() -> Path:
    return Path(str(resources.files("vlrepro.report").joinpath("papers.yaml")))


def load_papers(path: str | Path | None = None) -> dict[str, PaperCard]:
    """Read and validate the paper cards (default: the packaged ``papers.yaml``), in :data:`PAPERS` order."""
    path = Path(path) if path else default_path()
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise PapersError(f"{path}: cannot read: {e}") from None
    if not isinstance(raw, dict) or set(raw) != set(PAPERS):
        found = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise PapersError(f"{path.name}: expected one card for each of {', '.join(PAPERS)}; found {found}")
    cards = {}
    for paper in PAPERS:
        try:
            cards[paper] = PaperCard.model_validate(raw[paper])
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "(card)"
            raise PapersError(f"{path.name} {paper}: field '{field}': {err['msg']}") from None
    return cards


def check_against_references(cards: dict[str, PaperCard], refs: list[Reference]) -> None:
    """Every paper method a main table names is in the references, and every paper column is reported for at
    least one of its rows (a missing cell is a gap in the paper's table, a column nobody has is a typo)."""
    for paper, card in cards.items():
        known = {(r.method, r.benchmark, r.split, r.metric) for r in refs if r.paper == paper}
        methods = {r.method for r in refs if r.paper == paper}
        for table in card.tables:
            where = f"papers.yaml {paper} table {table.title!r}"
            for method in table.rows:
                if method not in methods:
                    raise PapersError(f"{where}: no reference of {paper} names method {method!r}")
            for col in table.columns:
                if col.metric is not None and not any(
                    (m, col.benchmark, col.split, col.metric) in known for m in table.rows
                ):
                    raise PapersError(
                        f"{where}: no reference has {col.label()!r} for any of its rows; check benchmark, split and "
                        "metric against references.yaml"
                    )


def missing_metrics(table: MainTable, names: set[str]) -> list[str]:
    """The metrics ``table`` reads that its stage's runs lack (``names``: their metric names); the report says
    so under the table rather than showing a bare '—'."""
    return sorted({col.ours for col in table.columns} - names)


def paper_of_stage(cards: dict[str, PaperCard], stage: str) -> str | None:
    """The paper a stage belongs to, or None (data, pretrain and stages no card lists)."""
    return next((paper for paper, card in cards.items() if stage in card.stages), None)
