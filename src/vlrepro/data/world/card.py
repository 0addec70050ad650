"""The data card: a statistics table of a built suite and a figure of sample records."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from vlrepro.data.records import Record, load_split
from vlrepro.data.world.suite import SETS
from vlrepro.io import read_json


def _in_suite_order(listed: dict) -> list[tuple[str, str]]:
    """(set, split) pairs of a manifest in the order of ``SETS`` (the manifest's own keys are sorted)."""
    known = [(s, p) for s, ps in SETS.items() for p in ps if p in listed.get(s, {})]
    return known + sorted((s, p) for s, ps in listed.items() for p in ps if (s, p) not in known)


def suite_statistics(out_dir: Path) -> pd.DataFrame:
    """One row per set/split of the suite under ``out_dir`` (as listed in its manifest)."""
    rows = []
    for set_name, split in _in_suite_order(read_json(Path(out_dir) / "manifest.json")["sets"]):
        data = load_split(Path(out_dir) / set_name / split)
        texts = [r.text for r in data.records if r.text]
        scenes = data.meta.get("scenes", [])
        rows.append(
            {
                "set": set_name,
                "split": split,
                "images": 0 if data.images is None else len(data.images),
                "records": len(data.records),
                "records/image": len(data.records) / max(1, len({r.image for r in data.records})),
                "objects/image": float(np.mean([len(s) for s in scenes])) if scenes else float("nan"),
                "words/text": float(np.mean([len(t.split()) for t in texts])) if texts else float("nan"),
                "boxes/record": float(np.mean([len(r.boxes) for r in data.records])),
                "phrases/record": float(np.mean([len(r.phrases) for r in data.records])),
                "vocabulary": len({w for t in texts for w in t.lower().split()}),
            }
        )
    return pd.DataFrame(rows)


def _title(record: Record, meta: dict) -> str:
    if record.text:
        return record.text
    names = [c["name"] for c in meta.get("categories", [])]
    return ", ".join(names[label] for label in record.labels) if names else ""


def plot_samples(out_dir: Path, set_name: str, n: int = 8, split: str | None = None) -> Figure:
    """The first ``n`` records of a split (default: its first split) with their text and boxes drawn."""
    out_dir = Path(out_dir)
    if split is None:
        split = next(p for s, p in _in_suite_order(read_json(out_dir / "manifest.json")["sets"]) if s == set_name)
    data = load_split(out_dir / set_name / split)
    records = data.records[:n]
    cols = min(4, max(1, len(records)))
    rows = max(1, -(-len(records) // cols))
    fig = Figure(figsize=(3 * cols, 3.4 * rows))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, record in zip(axes.flat, records, strict=False):
        ax.imshow(data.image(record), interpolation="nearest")
        for x0, y0, x1, y1 in record.boxes:
            # Boxes are right/bottom exclusive; pixel i covers [i - 0.5, i + 0.5] in imshow coordinates.
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor="lime", lw=1.5))
        ax.set_title("\n".join(textwrap.wrap(_title(record, data.meta), 32)), fontsize=8)
    fig.suptitle(f"{set_name}/{split}")
    fig.tight_layout()
    return fig
