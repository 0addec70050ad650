"""Convert every real dataset whose path is set in ``data.real`` into record folders (the `data` stage)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from vlrepro.data.real.coco import coco_instances_from_config, coco_karpathy_from_config
from vlrepro.data.real.config import RealDataConfig
from vlrepro.data.real.cub import cub_from_config
from vlrepro.data.real.errors import README_HINT, DatasetError
from vlrepro.data.real.flickr30k import flickr30k_entities_from_config
from vlrepro.data.real.odinw import odinw_from_config
from vlrepro.data.real.refer import REFER_SETS, refer_from_config
from vlrepro.data.real.visual_genome import visual_genome_from_config
from vlrepro.data.real.web_captions import web_captions_from_config
from vlrepro.data.records import Split, save_split
from vlrepro.io import read_json, write_json


def configured_datasets(cfg: RealDataConfig) -> dict[str, Callable[[], dict[str, Split]]]:
    """Loaders of the datasets ``cfg`` points at, by output name; empty when no path is set.

    ``data.real.refer`` converts each refer set whose ``refs(<split_by>).p`` is present (``REFER_SETS``); a
    ``refer`` path holding none of them is a ``DatasetError`` that lists the files tried.
    """
    jobs: dict[str, Callable[[], dict[str, Split]]] = {}
    if cfg.refer is not None:
        tried = [cfg.refer / folder / f"refs({split_by}).p" for _, folder, split_by in REFER_SETS]
        # A user may hold only some of the refer sets; each one present is converted.
        present = [(name, folder, split_by) for (name, folder, split_by), refs in zip(REFER_SETS, tried, strict=True)
                   if refs.is_file()]
        for name, folder, split_by in present:
            jobs[name] = lambda f=folder, s=split_by: refer_from_config(cfg, f, s)
        if not present:  # a set refer path that gives nothing is a wrong path, not an empty dataset
            raise DatasetError(
                f"{cfg.refer}: data.real.refer is set but holds no refer set; tried "
                f"{', '.join(str(p) for p in tried)}; expected at least one of them, each with an instances.json "
                f"beside it (<refer>/refcoco/refs(unc).p, ...; {README_HINT})"
            )
    if cfg.flickr30k_entities is not None:
        jobs["flickr30k_entities"] = lambda: flickr30k_entities_from_config(cfg)
    if cfg.visual_genome is not None:
        jobs["visual_genome"] = lambda: visual_genome_from_config(cfg)
    if cfg.cub is not None:
        jobs["cub"] = lambda: cub_from_config(cfg)
    if cfg.coco_karpathy is not None:
        jobs["coco_karpathy"] = lambda: coco_karpathy_from_config(cfg)
    if cfg.odinw is not None:
        jobs["odinw"] = lambda: odinw_from_config(cfg)
    if cfg.web_captions is not None:
        jobs["web_captions"] = lambda: web_captions_from_config(cfg)
    instances = [k for k in ("coco_instances", "coco_instances_train") if getattr(cfg, k) is not None]
    if instances:  # each file a split named by its subset, e.g. val2014
        subsets = [getattr(cfg, k).stem.removeprefix("instances_") for k in instances]
        if len(set(subsets)) < len(subsets):
            raise DatasetError(f"data.real.coco_instances and coco_instances_train are both instances_{subsets[0]}"
                               f".json; point them at two subsets (e.g. val2017 and train2017)")
        jobs["coco_instances"] = lambda: {s: coco_instances_from_config(cfg, k)
                                          for s, k in zip(subsets, instances, strict=True)}
    return jobs


def build_real(cfg: RealDataConfig, out_dir: Path) -> dict[str, dict[str, int]]:
    """Write ``out_dir/<dataset>/<split>/records.json`` for each configured dataset, and ``manifest.json``.

    Returns ``{dataset: {split: records}}``; with no path set it writes an empty manifest, so the stage's
    output exists in every profile. Folders an earlier build listed in its manifest are removed first, so a
    dataset or split that is no longer configured cannot linger (run outside DVC, nothing else clears them).
    """
    out_dir = Path(out_dir)
    jobs = configured_datasets(cfg)  # a configuration error stops here, before anything is removed
    if (out_dir / "manifest.json").is_file():
        for name in read_json(out_dir / "manifest.json").get("datasets", {}):
            shutil.rmtree(out_dir / name, ignore_errors=True)
    counts: dict[str, dict[str, int]] = {}
    for name, load in jobs.items():
        splits = load()
        for split_name, split in splits.items():
            save_split(out_dir / name / split_name, split)
        counts[name] = {s: len(split.records) for s, split in splits.items()}
    write_json(out_dir / "manifest.json", {"datasets": counts})
    return counts
