"""Convert every real dataset whose path is set in ``data.real`` into record folders (the `data` stage)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from vlrepro.data.real.coco import coco_instances_from_config, coco_karpathy_from_config
from vlrepro.data.real.config import RealDataConfig
from vlrepro.data.real.cub import cub_from_config
from vlrepro.data.real.flickr30k import flickr30k_entities_from_config
from vlrepro.data.real.refer import refer_from_config
from vlrepro.data.real.visual_genome import visual_genome_from_config
from vlrepro.data.records import Split, save_split
from vlrepro.io import write_json

# (name in data/real/, refer dataset folder, split_by) — the splits the papers evaluate on
REFER_SETS = (
    ("refcoco", "refcoco", "unc"),
    ("refcoco+", "refcoco+", "unc"),
    ("refcocog", "refcocog", "umd"),
    ("refcocog_google", "refcocog", "google"),
    ("refclef", "refclef", "unc"),
)


def configured_datasets(cfg: RealDataConfig) -> dict[str, Callable[[], dict[str, Split]]]:
    """Loaders of the datasets ``cfg`` points at, by output name; empty when no path is set."""
    jobs: dict[str, Callable[[], dict[str, Split]]] = {}
    if cfg.refer is not None:
        for name, folder, split_by in REFER_SETS:
            # A user may hold only some of the refer sets; each one present is converted.
            if (cfg.refer / folder / f"refs({split_by}).p").is_file():
                jobs[name] = lambda f=folder, s=split_by: refer_from_config(cfg, f, s)
    if cfg.flickr30k_entities is not None:
        jobs["flickr30k_entities"] = lambda: flickr30k_entities_from_config(cfg)
    if cfg.visual_genome is not None:
        jobs["visual_genome"] = lambda: visual_genome_from_config(cfg)
    if cfg.cub is not None:
        jobs["cub"] = lambda: cub_from_config(cfg)
    if cfg.coco_karpathy is not None:
        jobs["coco_karpathy"] = lambda: coco_karpathy_from_config(cfg)
    if cfg.coco_instances is not None:
        subset = cfg.coco_instances.stem.removeprefix("instances_")  # e.g. val2014
        jobs["coco_instances"] = lambda: {subset: coco_instances_from_config(cfg)}
    return jobs


def build_real(cfg: RealDataConfig, out_dir: Path) -> dict[str, dict[str, int]]:
    """Write ``out_dir/<dataset>/<split>/records.json`` for each configured dataset, and ``manifest.json``.

    Returns ``{dataset: {split: records}}``; with no path set it writes an empty manifest, so the stage's
    output exists in every profile.
    """
    out_dir = Path(out_dir)
    counts: dict[str, dict[str, int]] = {}
    for name, load in configured_datasets(cfg).items():
        splits = load()
        for split_name, split in splits.items():
            save_split(out_dir / name / split_name, split)
        counts[name] = {s: len(split.records) for s, split in splits.items()}
    write_json(out_dir / "manifest.json", {"datasets": counts})
    return counts
