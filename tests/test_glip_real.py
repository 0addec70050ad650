"""GLIP on real data (glip.source: real, the paper profile), end to end on a fixture the test writes: JPEG files,
COCO instances files (train and val), Flickr30k Entities, Visual Genome and Karpathy's captions, converted by the
`data` stage's function; then a GLIP-T(C) run, its student and the ODinW transfer through their command with a
tiny model, and the stage's notebook over those runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from paper_project import paper_project
from PIL import Image, ImageDraw
from test_amc_real import _flickr, _vg

from vlrepro.data.images import Letterbox
from vlrepro.data.real.errors import DatasetError
from vlrepro.glip.data import category_names, split_pixels
from vlrepro.glip.real import open_split
from vlrepro.models import save_pretrained
from vlrepro.models.backbones import CNNBackbone, CNNConfig
from vlrepro.models.text import TextConfig, TextEncoder, train_wordpiece
from vlrepro.stage import run_notebook

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 17, "name": "cat"}, {"id": 3, "name": "car"}]  # ids with gaps
FILL = {1: "red", 17: "green", 3: "blue"}


def _instances(root: Path, subset: str, n: int, first_id: int, json_name: str | None = None,
               categories: list[dict] = CATEGORIES, crowd: bool = False) -> Path:  # fmt: skip
    """``instances_<subset>.json`` (or ``json_name``) in ``root`` over ``n`` JPEGs in ``root/subset``, two or three
    objects each (and, with ``crowd``, a crowd region of persons in the first image)."""
    images, anns = [], []
    for k in range(n):
        image_id, w, h = first_id + k, 96 + 16 * (k % 3), 80
        name = f"{image_id:012d}.jpg"
        im = Image.new("RGB", (w, h), (90, 90, 90))
        draw = ImageDraw.Draw(im)
        for j, cat in enumerate([1, 3, 17][: 2 + k % 2]):
            box = [4 + 30 * j, 10 + 5 * j, 24, 30]
            draw.rectangle([box[0], box[1], box[0] + box[2], box[1] + box[3]], fill=FILL[cat])
            anns.append({"id": len(anns) + 1 + 1000 * first_id, "image_id": image_id, "category_id": cat, "bbox": box,
                         "area": box[2] * box[3], "iscrowd": 0, "segmentation": []})  # fmt: skip
        if crowd and k == 0:
            anns.append({"id": 999 + 1000 * first_id, "image_id": image_id, "category_id": 1, "bbox": [60, 40, 30, 30],
                         "area": 900, "iscrowd": 1, "segmentation": []})  # fmt: skip
        (root / subset).mkdir(parents=True, exist_ok=True)
        im.save(root / subset / name, quality=90)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
    path = root / (json_name or f"instances_{subset}.json")
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return path


def write_fixture(root: Path) -> dict[str, str]:
    coco = root / "coco"
    train, val = _instances(coco, "train2017", 6, 1), _instances(coco, "val2017", 3, 100, crowd=True)
    flickr_images = root / "flickr30k-images"
    flickr_images.mkdir()
    flickr = _flickr(root / "flickr30k_entities", flickr_images)
    vg = _vg(root / "vg")
    odinw = root / "odinw" / "Aquarium"  # one ODinW dataset: its splits' COCO JSONs beside their images, with
    for split, n in (("train", 4), ("test", 2)):  # a Roboflow export's background category 0, which has no box
        _instances(odinw, split, n, 500 + 10 * n, json_name=f"{split}/_annotations.coco.json",
                   categories=[{"id": 0, "name": "creatures"}, *CATEGORIES])  # fmt: skip
    karpathy = {"images": [{"filepath": "train2017", "filename": f"{k:012d}.jpg", "imgid": k, "split": "train",
                            "cocoid": k, "sentences": [{"raw": "a red person next to a blue car", "tokens": []}]}
                           for k in range(1, 7)]}  # fmt: skip
    (root / "dataset_coco.json").write_text(json.dumps(karpathy))
    return {"coco_instances": str(val), "coco_instances_train": str(train), "coco_images": str(coco),
            "flickr30k_entities": str(flickr), "flickr30k_images": str(flickr_images), "visual_genome": str(vg),
            "coco_karpathy": str(root / "dataset_coco.json"), "odinw": str(odinw)}  # fmt: skip


TINY = {
    "real": {"image_size": SIZE, "novel_categories": ["cat"]},
    "model": {"dim": 16, "align_dim": 16, "num_heads": 2},
    "train": {"steps": 2, "batch_size": 4, "warmup_steps": 0, "eval_every": 1, "curve_images": 2, "workers": 2},
    "pseudo": {"images": 4, "threshold": 0.01},
    "transfer": {"shots": [1], "steps": 2, "batch_size": 2},
    "examples": 2,
}  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A scratch project: params.yaml (paper profile), data/real converted, tiny CNN and text checkpoints."""
    root = tmp_path_factory.mktemp("glip_real")
    paths = write_fixture(root / "datasets")
    P, counts = paper_project(root, "glip", paths, TINY)
    torch.manual_seed(0)
    ckpt = root / "checkpoints" / "pretrain"
    save_pretrained(CNNBackbone(CNNConfig(channels=(8, 8, 16, 16))), ckpt / "cnn")
    texts = ["person. cat. car.", "a red man stands beside a blue dog", "a green square", "the yellow bar"]
    tok = train_wordpiece(texts * 4, vocab_size=80)
    save_pretrained(TextEncoder(TextConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, num_layers=2,
                                           num_heads=2, intermediate_size=32), tok), ckpt / "text")  # fmt: skip
    return root, P.glip, counts


def test_coco_is_renumbered_split_base_novel_and_letterboxed(project):
    root, p, counts = project
    assert counts["coco_instances"] == {"val2017": 3, "train2017": 6}
    test = open_split(p, root / "data" / "real", "det", "test")
    assert category_names(test) == ["person", "car", "cat"]  # COCO id order 1, 3, 17, labels 0..2
    assert (test.meta["base_category_ids"], test.meta["novel_category_ids"]) == ([0, 1], [2])
    r = test.records[1]  # 112 x 80: scaled by 64/112, 9 px of padding above and below
    assert r.image == 1 and r.labels == (0, 1, 2) and (r.width, r.height) == (SIZE, SIZE)
    lb = Letterbox.fit(112, 80, SIZE)
    np.testing.assert_allclose(r.boxes[2], lb.to_input([(64, 20, 88, 50)])[0])
    pixels = split_pixels(test, [1])
    assert pixels.shape == (1, SIZE, SIZE, 3)
    x, y = (int(v) for v in lb.to_input([(76, 35, 76, 35)])[0][:2])  # the cat's centre: green
    assert pixels[0, y, x, 1] > 100 and pixels[0, y, x, [0, 2]].max() < 60  # PIL green: (0, 128, 0)
    assert tuple(pixels[0, 2, 30]) == (124, 116, 104)  # the padding
    with pytest.raises(DatasetError, match=r"novel_categories names \['zebra'\]"):
        open_split(p.model_copy(update={"real": p.real.model_copy(update={"novel_categories": ("zebra",)})}),
                   root / "data" / "real", "det", "test")
    with pytest.raises(DatasetError, match=r"coco_instances/train2014: missing.*coco_instances_train"):
        open_split(p.model_copy(update={"real": p.real.model_copy(update={"det_train": "train2014"})}),
                   root / "data" / "real", "det", "train")


def test_run_student_and_transfer_in_the_paper_profile(project, monkeypatch, capsys):
    root, _, _ = project
    from vlrepro.glip.__main__ import main

    monkeypatch.chdir(root)
    monkeypatch.delenv("VLREPRO_PARAMS", raising=False)
    assert main(["run", "--variant", "deep_gold", "--seed", "0"]) == 0
    doc = json.loads((root / "reports" / "metrics" / "glip" / "deep_gold-0.json").read_text())["metrics"]
    assert set(doc) >= {"det", "det_untrained", "det_shuffled", "flickr"} and "det_rich" not in doc
    assert set(doc["det"]) == {"all", "base", "novel"} and doc["flickr"]["R@1"] >= 0
    run = json.loads((root / "reports" / "runs" / "glip" / "deep_gold-0" / "run.json").read_text())
    assert [len(e["truth"]) for e in run["examples"]] == [2, 3]  # in input pixels, with their class names
    assert run["examples"][1]["truth"][2]["name"] == "cat"
    # the student's noun-phrase chunker knows only the world's grammar: on real captions it does not train, says
    # why, and leaves outputs without metrics, so that `dvc repro` goes on to the report (its claim not testable)
    assert main(["run", "--variant", "student", "--seed", "0"]) == 0
    assert "real captions need a part-of-speech chunker" in capsys.readouterr().err
    student = json.loads((root / "reports" / "metrics" / "glip" / "student-0.json").read_text())
    assert student["metrics"] == {} and not student.get("gates") and student["variant"] == "student"
    assert "chunker" in json.loads((root / "runs" / "glip" / "student-0" / "not_run.json").read_text())["reason"]
    assert main(["transfer", "--seed", "0"]) == 0  # k-shot on the ODinW dataset, both ways
    for mode in ("fine_tuning", "prompt_tuning"):
        odinw = json.loads((root / "reports" / "metrics" / "glip" / f"{mode}-0.json").read_text())["metrics"]["odinw"]
        assert set(odinw) == {"zero_shot", "k1"} and {"AP", "AP50"} <= set(odinw["k1"])
    # the stage's notebook reads these runs and draws the examples on COCO's letterboxed images
    (root / "notebooks").mkdir(exist_ok=True)
    shutil.copy(ROOT / "notebooks" / "40_glip.ipynb", root / "notebooks")
    assert run_notebook("40_glip", root, root / "params.yaml").is_file()
    assert (root / "reports" / "figures" / "glip_examples.png").is_file()


def test_two_instances_files_of_one_subset_are_refused(tmp_path):
    from vlrepro.data.real.config import RealDataConfig
    from vlrepro.data.real.suite import build_real

    path = _instances(tmp_path, "val2017", 1, 1)
    with pytest.raises(DatasetError, match="both instances_val2017.json"):
        build_real(RealDataConfig(coco_instances=path, coco_instances_train=path, coco_images=tmp_path), tmp_path / "r")


def test_odinw_splits_need_their_annotations(tmp_path):
    from vlrepro.data.real.odinw import load_odinw

    _instances(tmp_path, "train", 1, 1, json_name="train/_annotations.coco.json")
    with pytest.raises(DatasetError, match=r"test/annotations_without_background\.json: missing; expected the test"):
        load_odinw(tmp_path)


def test_odinw_splits_share_the_classes_that_have_boxes(project, tmp_path):
    from vlrepro.glip.real import odinw_splits
    from vlrepro.glip.transfer import k_shot_images

    root, p, _ = project
    train, test = odinw_splits(p, root / "data" / "real")
    assert category_names(train) == category_names(test) == ["person", "car", "cat"]  # background 0 dropped
    assert k_shot_images(train, 1) == [0, 1]  # the second image brings the first cat: not every image
    (tmp_path / "odinw" / "train").mkdir(parents=True)
    (tmp_path / "odinw" / "test").mkdir(parents=True)
    for split in ("train", "test"):
        src = root / "data" / "real" / "odinw" / split / "records.json"
        doc = json.loads(src.read_text())
        if split == "test":
            doc["meta"]["categories"] = doc["meta"]["categories"][1:]
        (tmp_path / "odinw" / split / "records.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="the ODinW splits list different categories"):
        odinw_splits(p, tmp_path)


def test_crowd_regions_are_letterboxed_and_scored_as_crowds(project):
    from vlrepro.glip.data import coco_ground_truth

    root, p, _ = project
    test = open_split(p, root / "data" / "real", "det", "test")
    lb = Letterbox.fit(96, 80, SIZE)
    np.testing.assert_allclose(test.records[0].meta["crowd_boxes"][0], lb.to_input([(60, 40, 90, 70)])[0])
    crowds = [a for a in coco_ground_truth(test, [0, 1, 2])["annotations"] if a["iscrowd"]]
    assert len(crowds) == 1 and crowds[0]["category_id"] == 0 and crowds[0]["image_id"] == 0


def test_a_prompt_over_the_token_budget_stops_the_run(project):
    from vlrepro.glip.run import train_and_evaluate

    root, p, _ = project
    short = p.model_copy(update={"train": p.train.model_copy(update={"max_prompt_tokens": 4})})
    with pytest.raises(ValueError, match="over glip.train.max_prompt_tokens = 4"):
        train_and_evaluate(short, "deep", 0, root / "data" / "real", root / "checkpoints" / "pretrain")
