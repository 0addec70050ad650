"""Atomic file writes and the metrics-JSON convention shared by every stage.

Every file a stage writes goes through a temp file in the same folder and ``os.replace``, so a killed
run never leaves half a file behind for DVC or a later stage to read.

Metrics JSON (``reports/metrics/<stage>.json`` or ``reports/metrics/<stage>/<variant>-<seed>.json``)::

    {"stage": "smcim", "variant": "full", "seed": 0,
     "metrics": {"refcocog.val.acc@0.5": 0.71, ...},       # numbers, possibly nested
     "claims": [{...claim rows, see vlrepro.report.claims...}],   # optional
     "gates": [{...learning gates, see vlrepro.report.gates...}]}  # optional

The report stage reads every such file; ``variant``/``seed`` may be null for single-run stages. Claim and
gate rows are checked there, where the other runs' metrics they point at are known; a malformed row stops
the report with a message naming the file and the row (``claims[i]`` / ``gates[i]``). Gate rows are also
checked as they are written (format, and the metric names of rows about the file's own variant).
"""

from __future__ import annotations

import io
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temp file name next to ``path`` for writers that want a name; renamed over ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions instead
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)  # the bytes reach the disk before the rename makes them visible
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temp file next to ``path``, then rename it over ``path``."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_npy(path: str | Path, array: np.ndarray) -> Path:
    return atomic_write(path, lambda f: np.save(f, array))


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if hasattr(x, "item") and getattr(x, "ndim", None) == 0:  # 0-d torch / numpy arrays
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        raise ValueError(f"refusing to write non-finite metric value {x!r}")
    return x


def write_json(path: str | Path, obj: Any) -> Path:
    buf = io.StringIO()
    json.dump(_jsonable(obj), buf, indent=2, sort_keys=True)
    buf.write("\n")
    return atomic_write_text(path, buf.getvalue())


def write_metrics(
    path: str | Path,
    stage: str,
    metrics: dict[str, Any],
    variant: str | None = None,
    seed: int | None = None,
    claims: list[dict[str, Any]] | None = None,
    gates: list[dict[str, Any]] | None = None,
) -> Path:
    """Write one stage's metrics in the convention above (numbers rounded to 6 digits for stable diffs).

    ``claims`` and ``gates`` are written as given (not rounded): their numbers are thresholds, not results.
    A malformed gate row raises ``vlrepro.report.gate_rows.GateError`` naming ``path`` and ``gates[i]``, and
    nothing is written.
    """

    def rounded(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: rounded(v) for k, v in x.items()}
        if isinstance(x, float):
            return round(x, 6)
        return x

    doc: dict[str, Any] = {"stage": stage, "variant": variant, "seed": seed, "metrics": rounded(_jsonable(metrics))}
    if claims is not None:
        doc["claims"] = _jsonable(claims)
    if gates is not None:
        from vlrepro.report.gate_rows import check_gates  # only when there are gate rows (pydantic's import)

        doc["gates"] = _jsonable(gates)
        check_gates(doc["gates"], str(path), variant, doc["metrics"])
    return write_json(path, doc)


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> Path:
    """Save a matplotlib figure as PNG, atomically and byte-reproducibly (no software/date metadata)."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=dpi, bbox_inches="tight",
                                                    metadata={"Software": None}))
