"""The whole DVC pipeline in the `paper` profile, on real-format fixtures, in a scratch copy of the repository.

Every dataset the paper profile reads is written by the per-paper fixture tests' writers (refer pickles over
COCO JPEGs, Flickr30k Entities XML, Visual Genome JSON, COCO instances and Karpathy captions, web alt-texts,
an ODinW export, CUB tables with masks). The params are the repository's `paper` profile with every model and
step count shrunk as `profiles.smoke` shrinks the default one, and the matrices keep one seed: the point is that
`make repro` goes from the dataset adapters to the report through the real stages, notebooks and dvc.lock,
not the numbers. Run it with ``pytest -m paper_pipeline`` (about 20 minutes on two cores); `make test` leaves
it out for CI's time budget, and the per-paper fixture tests (`test_*_real.py`) run there.
"""

from __future__ import annotations

import csv
import json
import re
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_amc_real import TINY as AMC_TINY
from test_amc_real import _flickr, _vg
from test_blip_real import TINY as BLIP_TINY
from test_blip_real import write_fixture as write_captions
from test_glip_real import CATEGORIES, _instances
from test_glip_real import TINY as GLIP_TINY
from test_pipeline import copy_repo, sh
from test_real_cub import write_cub
from test_smcim_real import TINY as SMCIM_TINY
from test_smcim_real import write_fixture as write_refer

from vlrepro.config import _merge

ROOT = Path(__file__).resolve().parents[1]


def write_datasets(root: Path) -> dict[str, str]:
    """Every dataset of the paper profile in its own format under ``root``; returns the ``data.real`` paths."""
    refer, train2014 = write_refer(root / "refer_set")  # refcoco/+/g over COCO train2014 JPEGs
    paths = write_captions(root / "captions")  # Karpathy's COCO captions and their images, web alt-texts
    coco = Path(paths["coco_images"])
    train, val = _instances(coco, "train2017", 6, 1), _instances(coco, "val2017", 3, 100, crowd=True)
    odinw = root / "odinw" / "Aquarium"
    for split, n in (("train", 4), ("test", 2)):
        _instances(odinw, split, n, 500 + 10 * n, json_name=f"{split}/_annotations.coco.json",
                   categories=[{"id": 0, "name": "creatures"}, *CATEGORIES])  # fmt: skip
    flickr_images = root / "flickr30k-images"
    flickr_images.mkdir()
    cub = write_cub(root / "CUB_200_2011", root / "segmentations")
    return {**paths, "refer": str(refer), "coco_train2014": str(train2014),
            "coco_instances": str(val), "coco_instances_train": str(train),
            "flickr30k_entities": str(_flickr(root / "flickr30k_entities", flickr_images)),
            "flickr30k_images": str(flickr_images), "visual_genome": str(_vg(root / "vg")), "odinw": str(odinw),
            "cub": str(cub), "cub_segmentations": str(root / "segmentations")}  # fmt: skip


def paper_fixture_params(paths: dict[str, str]) -> dict:
    """params.yaml in the paper profile, shrunk: the smoke overlay laid over the paper one (real data, the
    paper's recipes' switches), then each paper's fixture test's sizes, the real-data paths last."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    smoke, paper = raw["profiles"]["smoke"], raw["profiles"]["paper"]
    overlay = _merge(paper, smoke)
    base_pretrain = raw["pretrain"]  # the default tower architectures, not ResNet-50 and ViT-B/16
    for tower in ("cnn", "vit"):
        overlay["pretrain"][tower] = _merge(base_pretrain[tower], smoke["pretrain"][tower])
    overlay["data"]["world"] = smoke["data"]["world"]  # the smoke world, not the paper profile's 224 px one
    overlay["ala"]["model"]["clip_layers"] = None  # every block of the 2-block smoke ViT, not ViT-B's 0/3/6/9
    for section, tiny in (("amc", AMC_TINY), ("smcim", SMCIM_TINY), ("glip", GLIP_TINY), ("blip", BLIP_TINY)):
        overlay[section] = _merge(overlay[section], tiny)
    overlay["data"]["real"] = paths
    raw["profile"] = "paper"
    raw["profiles"]["paper"] = overlay
    return raw


@pytest.mark.paper_pipeline
def test_paper_profile_repro_on_fixtures_ends_with_a_report(tmp_path):
    work = tmp_path / "repo"
    env = copy_repo(work)
    paths = write_datasets(tmp_path / "datasets")
    (work / "params.yaml").write_text(yaml.safe_dump(paper_fixture_params(paths), sort_keys=False))
    dvc_yaml = work / "dvc.yaml"  # one seed per run: this checks the wiring, not the numbers
    dvc_yaml.write_text(re.sub(r"seed: \[0, 1, 2\]", "seed: [0]", dvc_yaml.read_text()))
    env.pop("VLREPRO_PARAMS", None)
    env["PYTHONPATH"] = str(work / "src")  # the copy's code, which dvc.lock hashes, not the editable install's
    sh("git", "init", "-q", cwd=work, env=env)
    sh("git", "add", "-A", cwd=work, env=env)
    sh("git", "commit", "-qm", "paper fixtures", cwd=work, env=env)
    t0 = time.perf_counter()
    sh(sys.executable, "-m", "vlrepro.matrix", "--jobs", "2", cwd=work, env=env)
    sh("dvc", "repro", cwd=work, env=env)
    print(f"\npaper-profile pipeline on fixtures: {time.perf_counter() - t0:.0f} s")
    assert sh("dvc", "status", cwd=work, env=env).strip().endswith("Data and pipelines are up to date.")
    converted = json.loads((work / "data" / "real" / "manifest.json").read_text())["datasets"]
    assert set(converted) == {"refcoco", "refcoco+", "refcocog", "refclef", "flickr30k_entities", "visual_genome",
                              "cub", "coco_karpathy", "web_captions", "coco_instances", "odinw"}  # fmt: skip
    lock = yaml.safe_load((work / "dvc.lock").read_text())["stages"]
    runs = [name for name in lock if "@" in name]
    matrices = [s["matrix"] for s in yaml.safe_load(dvc_yaml.read_text())["stages"].values() if "matrix" in s]
    assert len(runs) == sum(len(m.get("variant", [None])) * len(m["seed"]) for m in matrices)  # every run, 1 seed
    for name in runs:
        for out in lock[name].get("outs", []):
            assert (work / out["path"]).exists(), (name, out["path"])
    student = json.loads((work / "reports" / "metrics" / "glip" / "student-0.json").read_text())
    assert student["metrics"] == {}  # GLIP's student cannot train on real captions: it says so, dvc repro goes on
    with open(work / "reports" / "claims.csv") as f:
        rows = {r["claim"]: r for r in csv.DictReader(f)}
    assert rows["the self-trained student beats its teacher"]["verdict"] == "not testable"
    report = (work / "reports" / "REPORT.md").read_text()
    summary = report.split("\n## Summary\n", 1)[1].split("\n## ", 1)[0]
    for paper in ("AMC", "SMCIM", "GLIP", "ALA", "BLIP"):
        row = next(line for line in summary.splitlines() if line.startswith(f"| {paper} "))
        assert "| paper: " in row, row
    # the caveats are the paper profile's: the world's small CLIP is not what these runs used
    assert "The world CLIP ViT (4 blocks" not in report and "The CLIP is the pretrain stage's ViT-B/16" in report
