"""Learning curves as the files ``dvc plots`` reads (``plots:`` in dvc.yaml)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vlrepro.io import write_json


def write_curves(path: str | Path, curves: dict[str, pd.Series]) -> Path:
    """Write ``{line name: values indexed by step}`` as records ``{"step": s, name: value, ...}``.

    Every record has every name (``null`` where a line has no point at that step): DVC draws a gap there,
    and JSON has no NaN.
    """
    # a resumed run can log a step twice: its last value stands
    unique = {name: values[~values.index.duplicated(keep="last")] for name, values in curves.items()}
    wide = pd.DataFrame(unique).rename_axis("step").sort_index()
    wide = wide.astype(object).where(wide.notna(), None)
    return write_json(Path(path), wide.reset_index().to_dict("records"))
