"""A scratch project in the `paper` profile, for the real-data fixture tests of each paper."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vlrepro.config import validate_params
from vlrepro.data.real.suite import build_real

ROOT = Path(__file__).resolve().parents[1]


def write_paper_params(root: Path, section: str, paths: dict[str, str], tiny: dict[str, Any]) -> Path:
    """``root/params.yaml``: the repository's params in the ``paper`` profile, ``data.real`` pointed at ``paths``,
    the ``section`` overlay shrunk by ``tiny`` (merged one level deep, as profiles.smoke shrinks the default)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["profile"] = "paper"
    paper = raw["profiles"]["paper"]
    paper.setdefault("data", {})["real"] = paths
    for key, value in tiny.items():
        paper[section][key] = {**paper[section].get(key, {}), **value} if isinstance(value, dict) else value
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return root / "params.yaml"


def paper_project(root: Path, section: str, paths: dict[str, str], tiny: dict[str, Any]) -> tuple[Any, dict]:
    """``write_paper_params``, then ``data/real`` converted as the `data` stage does; the validated params
    (sections ``data`` and ``section``) and the conversion's counts."""
    params = write_paper_params(root, section, paths, tiny)
    P = validate_params(yaml.safe_load(params.read_text()), sections=["data", section])
    return P, build_real(P.data.real, root / "data" / "real")
