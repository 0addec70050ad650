"""ALA on real data (ala.source: real, the paper profile), end to end on a fixture the test writes: CUB-200-2011's
tables, JPEG images and PNG bird masks, converted by the `data` stage's function; then a run and the post-hoc
baselines through their command with a tiny CLIP, and the stage's notebook over those runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from paper_project import paper_project
from test_real_cub import CLASSES, N_TEST, N_TRAIN, write_cub

from vlrepro.ala.data import load_cub, load_real_cub
from vlrepro.data.images import PAD
from vlrepro.data.real.config import RealDataConfig
from vlrepro.data.real.errors import DatasetError
from vlrepro.data.real.suite import build_real
from vlrepro.models import save_pretrained
from vlrepro.models.backbones import ViTConfig
from vlrepro.models.clip import CLIPConfig, DualEncoder
from vlrepro.models.text import TextConfig, train_wordpiece
from vlrepro.stage import run_notebook

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32  # the tiny CLIP's input; the fixture's images are 20 x 16 px

TINY = {  # the paper profile's recipe, shrunk as profiles.smoke shrinks the default one
    "model": {"clip_layers": [0, 1], "side_dim": 16, "side_heads": 2, "queries": 4, "pb_dim": 16},
    "train": {"steps": 3, "batch_size": 8, "warmup_steps": 0, "eval_every": 2},
    "explain": {"images": 6, "steps": 4, "rise_masks": 8, "worst": 3},
    "examples": 2,
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A scratch project: params.yaml (paper profile), data/real converted, a tiny CLIP checkpoint."""
    root = tmp_path_factory.mktemp("ala_real")
    cub = write_cub(root / "datasets" / "CUB_200_2011", root / "datasets" / "segmentations")
    paper_project(root, "ala", {"cub": str(cub)}, TINY)  # the masks are found next to the CUB root
    torch.manual_seed(0)
    tok = train_wordpiece(["a bird", "an albatross"], vocab_size=40)
    text = TextConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                      mlm_head=False)  # fmt: skip
    vision = ViTConfig(img_size=SIZE, patch_size=8, embed_dim=32, depth=2, num_heads=2)
    save_pretrained(DualEncoder(CLIPConfig(vision=vision, text=text, embed_dim=8), tok),
                    root / "checkpoints" / "pretrain" / "clip")  # fmt: skip
    return root


def test_images_and_bird_masks_are_letterboxed_alike(project):
    train, val, test = load_cub("real", project / "data" / "real", SIZE)
    n = len(CLASSES) * N_TRAIN
    assert (len(train) + len(val), len(test)) == (n, len(CLASSES) * N_TEST)
    assert test.names == ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
    # 20 x 16 px -> 32 x 26 px, 3 rows of padding above and below, in the padding colour and outside every mask
    assert test.images.shape == (len(test), 3, SIZE, SIZE) and test.masks.shape == (len(test), SIZE, SIZE)
    pad = torch.tensor(PAD, dtype=torch.uint8)[:, None, None]
    assert (test.images[:, :, :3] == pad).all() and (test.images[:, :, -3:] == pad).all()
    assert not (test.images[:, :, 3:-3] == pad).all(1).any()
    assert not test.masks[:, :3].any() and not test.masks[:, -3:].any()
    # the bird (mask >= 128) is rows 2-5, columns 6-8 of the 20 x 16 mask: x 9.6-14.4, y 6.25-12.75 in the input
    rows, cols = np.nonzero(test.masks[0].numpy())
    assert abs(rows.min() - 6.25) <= 1 and abs(rows.max() + 1 - 12.75) <= 1
    assert abs(cols.min() - 9.6) <= 1 and abs(cols.max() + 1 - 14.4) <= 1
    # image k is the colour (k, 0, 0): the first test image is the 9th of its class (JPEG moves colours a little)
    assert abs(int(test.images[0, 0, SIZE // 2, SIZE // 2]) - (N_TRAIN + 1)) <= 3


def test_run_baselines_and_notebook_in_the_paper_profile(project, monkeypatch):
    from vlrepro.ala.__main__ import main

    monkeypatch.chdir(project)
    monkeypatch.delenv("VLREPRO_PARAMS", raising=False)
    assert main(["run", "--variant", "full", "--seed", "0"]) == 0
    assert main(["baselines", "--seed", "0"]) == 0
    metrics = project / "reports" / "metrics" / "ala"
    assert sorted(p.name for p in metrics.iterdir()) == ["full-0.json", "gradcam-0.json", "rise-0.json",
                                                          "rollout-0.json"]  # fmt: skip
    test = json.loads((metrics / "full-0.json").read_text())["metrics"]["cub"]["test"]
    assert test["chance"] == pytest.approx(1 / 3) and 0 <= test["miou"] <= 1
    run = json.loads((project / "reports" / "runs" / "ala" / "full-0" / "run.json").read_text())
    assert np.asarray(run["maps"]).shape == (2, SIZE, SIZE)  # maps at the CLIP tower's input
    history = json.loads((project / "reports" / "runs" / "ala" / "full-0" / "history.json").read_text())
    assert any("val_accuracy" in h for h in history)  # the learning curve on the real val split
    # the stage's notebook reads these runs and draws the maps over the letterboxed CUB images
    (project / "notebooks").mkdir(exist_ok=True)
    shutil.copy(ROOT / "notebooks" / "50_ala.ipynb", project / "notebooks")
    assert run_notebook("50_ala", project, project / "params.yaml").is_file()
    assert (project / "reports" / "figures" / "ala_maps.png").is_file()


def test_a_missing_conversion_mask_folder_or_image_names_what_to_fix(tmp_path):
    with pytest.raises(DatasetError, match=r"cub/train: missing; ala\.source = real reads cub train.*data\.real\.cub"):
        load_cub("real", tmp_path / "data" / "real", SIZE)
    bare = write_cub(tmp_path / "bare" / "CUB_200_2011", None)  # no segmentations/ anywhere near it
    build_real(RealDataConfig(cub=bare), tmp_path / "bare_real")
    with pytest.raises(DatasetError, match=r"data\.real\.cub_segmentations is not set"):
        load_real_cub(tmp_path / "bare_real" / "cub" / "test", SIZE)
    cub = write_cub(tmp_path / "full" / "CUB_200_2011", tmp_path / "full" / "segmentations")
    build_real(RealDataConfig(cub=cub), tmp_path / "real")
    gone = next((cub / "images").rglob("*_0010_*.jpg"))  # a test image (the 11th of its class)
    gone.unlink()
    missing = rf"1 of {len(CLASSES) * N_TEST} images missing.*{gone.name}.*data\.real\.cub"
    with pytest.raises(DatasetError, match=missing):
        load_real_cub(tmp_path / "real" / "cub" / "test", SIZE)
