"""The ``report`` params section."""

from __future__ import annotations

from pydantic import Field

from vlrepro.config import Section


class ReportParams(Section):
    title: str = "vlrepro — reproducibility report"
    alpha: float = Field(0.05, gt=0, lt=1, description="significance level of claim tests")


Params = ReportParams
