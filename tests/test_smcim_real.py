"""SMCIM on real refer data (smcim.source: real, the paper profile), end to end on a fixture the test writes:
JPEG files and the refer toolkit's refs(unc).p / refs(umd).p + instances.json, converted by the `data` stage's
function, then SMCIM trained and scored through its command with a tiny model."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from paper_project import write_paper_params
from PIL import Image, ImageDraw
from test_real_refer import _ref, write_refer

from vlrepro.config import validate_params
from vlrepro.data.real.errors import DatasetError
from vlrepro.data.real.suite import build_real
from vlrepro.data.records import load_split
from vlrepro.metrics.boxes import acc_at_iou, cxcywh_to_xyxy
from vlrepro.models import save_pretrained
from vlrepro.models.backbones import CNNBackbone, CNNConfig
from vlrepro.models.text import TextConfig, TextEncoder, train_wordpiece
from vlrepro.smcim import features
from vlrepro.smcim.config import SMCIMParams
from vlrepro.smcim.model import SMCIMOutput
from vlrepro.smcim.real import RealImageExpressions, normalised_to_original, random_object_acc, real_split

# (id, width, height): landscape, portrait and square images, so that a letterbox bug shows in the boxes
SIZES = [(1, 160, 120), (2, 120, 160), (3, 200, 100), (4, 90, 150), (5, 128, 128), (6, 150, 100), (7, 100, 140)]
COLOURS = ["red", "blue", "green"]


def _objects(image_id: int, w: int, h: int) -> list[tuple[int, list[float]]]:
    """Three objects per image, (ann id, COCO [x, y, w, h]): left, right, bottom."""
    return [(image_id * 10 + 0, [0.05 * w, 0.1 * h, 0.3 * w, 0.4 * h]),
            (image_id * 10 + 1, [0.6 * w, 0.1 * h, 0.35 * w, 0.5 * h]),
            (image_id * 10 + 2, [0.3 * w, 0.65 * h, 0.4 * w, 0.3 * h])]  # fmt: skip


def write_fixture(root: Path) -> tuple[Path, Path]:
    """A refer root holding refcoco, refcoco+ (unc) and refcocog (umd) over seven COCO-named JPEGs, and refclef
    (ReferItGame, unc) over the same pictures saved as saiapr_tc-12 files (``root/saiapr``, in subfolders)."""
    images_dir = root / "coco" / "train2014"
    images_dir.mkdir(parents=True)
    images, anns = [], []
    for image_id, w, h in SIZES:
        name = f"COCO_train2014_{image_id:012d}.jpg"
        im = Image.new("RGB", (w, h), (90, 90, 90))
        draw = ImageDraw.Draw(im)
        for (ann_id, (x, y, bw, bh)), colour in zip(_objects(image_id, w, h), COLOURS, strict=True):
            draw.rectangle([x, y, x + bw, y + bh], fill=colour)
            anns.append({"id": ann_id, "image_id": image_id, "bbox": [x, y, bw, bh], "category_id": 1 + ann_id % 3,
                         "area": bw * bh, "iscrowd": 0, "segmentation": [[x, y, x + bw, y, x + bw, y + bh]]})
        im.save(images_dir / name, quality=90)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
    words = ["red thing on the left", "blue thing on the right", "green thing at the bottom"]
    unc = {1: "train", 2: "train", 3: "train", 4: "val", 5: "testA", 6: "testB", 7: "val"}
    umd = {1: "train", 2: "train", 3: "train", 4: "val", 5: "test", 6: "test", 7: "val"}
    for dataset, split_by, splits in (("refcoco", "unc", unc), ("refcoco+", "unc", unc), ("refcocog", "umd", umd)):
        refs = [_ref(image_id * 10 + k, image_id * 10 + k, image_id, splits[image_id], [words[k]], cat=1 + k)
                for image_id, _, _ in SIZES for k in range(3)]  # fmt: skip
        write_refer(root / "refer", dataset, split_by, refs=refs, images=images, anns=anns)
    clef_images = [{**im, "file_name": f"{im['id']:02d}/images/{im['id']}.jpg"} for im in images]
    for coco, clef in zip(images, clef_images, strict=True):
        (root / "saiapr" / clef["file_name"]).parent.mkdir(parents=True)
        shutil.copy(images_dir / coco["file_name"], root / "saiapr" / clef["file_name"])
    clef_splits = {1: "train", 2: "train", 3: "train", 4: "val", 5: "test", 6: "test", 7: "val"}
    refs = [_ref(image_id * 10 + k, image_id * 10 + k, image_id, clef_splits[image_id], [words[k]], cat=1 + k)
            for image_id, _, _ in SIZES for k in range(3)]  # fmt: skip
    write_refer(root / "refer", "refclef", "unc", refs=refs, images=clef_images, anns=anns)
    return root / "refer", images_dir


TINY = {  # the paper profile with a tiny model and a few steps, as profiles.smoke shrinks the default one
    "text": "world", "text_blocks": 2, "image_size": 64, "examples": 4,
    "model": {"dim": 8, "num_heads": 2, "levels": 2, "stage1_depth": 1, "stage2_depth": 1},
    "train": {"steps": 3, "batch_size": 4, "eval_every": 2, "eval_limit": 8, "workers": 2},  # images decoded apart
    "augment": {"views": 2},
}


def scratch_params(root: Path, refer: Path, images: Path, smcim: dict | None = None) -> Path:
    """The repository's params.yaml in the paper profile, pointed at the fixture, SMCIM shrunk."""
    paths = {"refer": str(refer), "coco_train2014": str(images), "saiapr": str(refer.parent / "saiapr")}
    return write_paper_params(root, "smcim", paths, smcim or TINY)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A scratch project: params.yaml (paper profile), data/real converted, tiny encoder checkpoints."""
    root = tmp_path_factory.mktemp("smcim_real")
    refer, images = write_fixture(root / "datasets")
    params = scratch_params(root, refer, images)
    P = validate_params(yaml.safe_load(params.read_text()), sections=["data", "smcim"])
    counts = build_real(P.data.real, root / "data" / "real")  # what the `data` stage runs
    torch.manual_seed(0)
    save_pretrained(CNNBackbone(CNNConfig(channels=(8, 8, 16, 16))), root / "checkpoints" / "pretrain" / "cnn")
    texts = [r.text for r in load_split(root / "data" / "real" / "refcoco" / "train").records]
    tok = train_wordpiece(texts * 4, vocab_size=60)
    text = TextEncoder(TextConfig(vocab_size=60, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32), tok)
    save_pretrained(text, root / "checkpoints" / "pretrain" / "text")
    return root, P.smcim, counts


def test_paper_profile_reads_real_refer_splits(project, tmp_path):
    root, p, counts = project
    assert p.source == "real" and p.train.encoder_lr > 0  # the paper profile: real data, end to end
    # so the smcim_features stage caches nothing (no run would read it), and says why
    assert features.extract_all(p, root / "data" / "real", root / "checkpoints" / "pretrain", tmp_path, 0) == {}
    assert [f.name for f in tmp_path.iterdir()] == ["skipped.json"]
    assert counts["refcocog"] == {"train": 9, "val": 6, "test": 6}
    assert [p.eval_splits(s) for s in p.eval_sets] == [("val", "testA", "testB"), ("val", "testA", "testB"),
                                                       ("val", "test")]  # fmt: skip


def test_run_in_the_paper_profile_writes_metrics_in_original_pixels(project, monkeypatch):
    root, p, _ = project
    from vlrepro.smcim.__main__ import main

    monkeypatch.chdir(root)
    monkeypatch.delenv("VLREPRO_PARAMS", raising=False)
    assert main(["run", "--variant", "full", "--seed", "0"]) == 0
    doc = json.loads((root / "reports" / "metrics" / "smcim" / "full-0.json").read_text())
    metrics = doc["metrics"]
    assert metrics.pop("seconds") > 0  # the run's wall time
    assert {s: sorted(m) for s, m in metrics.items()} == {
        "refcoco": ["testA", "testB", "val"], "refcoco+": ["testA", "testB", "val"], "refcocog": ["test", "val"]}
    for s, splits in metrics.items():
        for sp, m in splits.items():
            assert math.isfinite(m["acc@0.5"]) and 0 <= m["acc@0.5"] <= 1, (s, sp)
    # the control: every val expression picks among its image's 3 objects, which do not overlap: 1 of 3 hits
    assert metrics["refcoco"]["val"]["random_object_acc@0.5"] == pytest.approx(1 / 3, abs=1e-6)
    assert doc["gates"][0]["control_metric"] == "refcoco.val.random_object_acc@0.5"
    history = json.loads((root / "reports" / "runs" / "smcim" / "full-0" / "history.json").read_text())
    assert [h["step"] for h in history if "val_acc@0.5" in h] == [2, 3]
    # predictions are in the original images' pixels: inside each image (val has a portrait and a landscape
    # image), targets exactly the annotated boxes
    run = json.loads((root / "reports" / "runs" / "smcim" / "full-0" / "run.json").read_text())
    sizes = {f"COCO_train2014_{i:012d}.jpg": (w, h) for i, w, h in SIZES}
    val = load_split(root / "data" / "real" / "refcoco" / "val")
    assert len(run["examples"]) == 4
    for ex, record in zip(run["examples"], val.records, strict=False):
        w, h = sizes[ex["image"]]
        x0, y0, x1, y1 = ex["predicted"]
        assert 0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h, (ex, w, h)
        assert ex["target"] == pytest.approx(list(record.boxes[0])) and ex["image"] == record.image


class Oracle(torch.nn.Module):
    """A perfect model: predicts the given normalised cxcywh boxes, in order, batch after batch."""

    def __init__(self, boxes: torch.Tensor):
        super().__init__()
        self.boxes, self.seen = boxes, 0

    def forward(self, *inputs: torch.Tensor) -> SMCIMOutput:
        n = len(inputs[-1])  # the attention mask: one row per expression
        self.seen += n
        return SMCIMOutput(self.boxes[self.seen - n : self.seen], torch.zeros(n, 1))


def test_a_perfect_model_scores_in_original_pixels(project, tmp_path):
    # Acc@0.5 is scored in the original images' pixels: a model that predicts each letterboxed target exactly
    # gets back the annotated boxes, on both paths
    root, p, _ = project
    from vlrepro.models import load_pretrained
    from vlrepro.smcim import online, run

    tokenizer = load_pretrained(root / "checkpoints" / "pretrain" / "text").tokenizer
    data = RealImageExpressions(root / "data" / "real" / "refcoco" / "val", tokenizer, p, augment=False)
    assert all(data[i][0].shape == (3, 64, 64) for i in range(len(data)))
    # image 4 (90x150, portrait) into 64: 38x64 (round(38.4)), 13 px of padding left and right
    assert data.letterbox[0].tolist() == [90, 150, 64, 38, 64, 13, 0]
    predicted = online.predict(Oracle(torch.stack([data[i][2] for i in range(len(data))])), data)
    torch.testing.assert_close(predicted, data.boxes_px, atol=1e-3, rtol=0)
    assert acc_at_iou(predicted, data.boxes_px) == 1.0
    cached = p.model_copy(update={"train_sets": ("refcoco",), "eval_sets": ("refcoco",),
                                  "train": p.train.model_copy(update={"encoder_lr": 0.0})})
    features.extract_all(cached, root / "data" / "real", root / "checkpoints" / "pretrain", tmp_path, 0)
    f = features.load_features(tmp_path / "refcoco" / "val.safetensors")
    predicted = run.predict(Oracle(f.boxes[0]), f)
    torch.testing.assert_close(predicted, data.boxes_px, atol=1e-3, rtol=0)


def test_cached_path_on_real_data(project, tmp_path):
    root, p, _ = project
    cached = p.model_copy(update={"train": p.train.model_copy(update={"encoder_lr": 0.0})})
    out = tmp_path / "features"
    seconds = features.extract_all(cached, root / "data" / "real", root / "checkpoints" / "pretrain", out, 0)
    assert sorted(seconds) == ["refcoco+/testA", "refcoco+/testB", "refcoco+/train", "refcoco+/val", "refcoco/testA",
                               "refcoco/testB", "refcoco/train", "refcoco/val", "refcocog/test", "refcocog/train",
                               "refcocog/val"]  # fmt: skip
    f = features.load_features(out / "refcoco" / "train.safetensors")
    assert f.views == 2 and f.levels[0].shape[:2] == (2, 3) and len(f) == 9  # 2 views of 3 images, 9 expressions
    assert f.image_files == [f"COCO_train2014_{i:012d}.jpg" for i in (1, 2, 3)]
    torch.testing.assert_close(normalised_to_original(cxcywh_to_xyxy(f.boxes[0]), f.letterbox), f.target_px,
                               atol=1e-3, rtol=0)  # fmt: skip
    from vlrepro.smcim.run import train_and_evaluate

    r = train_and_evaluate(cached, "full", 0, out, root / "data" / "real")
    assert sorted(r.metrics["refcocog"]) == ["test", "val"]
    assert all(math.isfinite(m["acc@0.5"]) for s in r.metrics.values() for m in s.values())
    assert r.examples[0]["image"] == "COCO_train2014_000000000004.jpg"
    world = cached.model_copy(update={"source": "world", "train_sets": ("refcoco",), "eval_sets": ("refcoco",)})
    with pytest.raises(ValueError, match="features of the other source"):
        train_and_evaluate(world, "full", 0, out)


def test_referitgame_trains_and_scores_on_its_own_splits(project, tmp_path):
    root, p, counts = project
    assert counts["refclef"] == {"train": 9, "val": 6, "test": 6}
    clef = SMCIMParams.model_validate({**p.model_dump(), "train_sets": ["refclef"], "eval_sets": ["refclef"],
                                       "train": {**p.train.model_dump(), "encoder_lr": 0.0}})  # fmt: skip
    out = tmp_path / "features"
    seconds = features.extract_all(clef, root / "data" / "real", root / "checkpoints" / "pretrain", out, 0)
    assert sorted(seconds) == ["refclef/test", "refclef/train", "refclef/val"]
    from vlrepro.smcim.run import train_and_evaluate

    r = train_and_evaluate(clef, "full", 0, out, root / "data" / "real")
    assert sorted(r.metrics) == ["refclef"] and sorted(r.metrics["refclef"]) == ["test", "val"]
    assert r.metrics["refclef"]["val"]["random_object_acc@0.5"] == pytest.approx(1 / 3, abs=1e-6)
    assert r.examples[0]["image"] == "04/images/4.jpg"  # the saiapr file, as refclef's instances.json names it
    with pytest.raises(ValueError, match="refclef is a real set .* set smcim.source: real"):
        SMCIMParams(train_sets=("refclef",), eval_sets=("refcoco",))


def test_control_by_hand():
    from vlrepro.data.records import Record, Split

    records = [Record("9", "a.jpg", 100, 100, "x", boxes=((0.0, 0.0, 10.0, 10.0),)),
               Record("8", "b.jpg", 100, 100, "y", boxes=((0.0, 0.0, 10.0, 10.0),))]  # fmt: skip
    # image 9: the target and a box of IoU 0.64 (both hit) and a far one; image 8: only the target
    objects = {"9": [[0, 0, 10, 10], [1, 1, 9, 9], [50, 50, 60, 60]], "8": [[0, 0, 10, 10]]}
    assert random_object_acc(Split(records, meta={"objects": objects})) == pytest.approx((2 / 3 + 1) / 2)
    with pytest.raises(DatasetError, match="re-run the `data` stage"):
        random_object_acc(Split(records, meta={}))


def test_absent_set_or_missing_images_stop_before_training(project, tmp_path, monkeypatch, capsys):
    root, p, _ = project
    real = tmp_path / "data" / "real"
    shutil.copytree(root / "data" / "real" / "refcoco", real / "refcoco")
    with pytest.raises(DatasetError) as err:
        real_split(real / "refcocog" / "val")
    msg = str(err.value)
    assert msg.startswith(f"{real / 'refcocog' / 'val'}: missing") and "data.real.refer" in msg
    assert "<refer>/refcocog/refs(umd).p" in msg and "no refcocog split has been converted" in msg
    with pytest.raises(DatasetError, match=r"refcoco has the splits testA, testB, train, val"):
        real_split(real / "refcoco" / "test")
    # an image gone from the image root: the split is refused, not trimmed
    images = tmp_path / "images"
    shutil.copytree(Path(load_split(real / "refcoco" / "val").meta["image_root"]), images)
    (images / "COCO_train2014_000000000007.jpg").unlink()
    for split in ("train", "val", "testA", "testB"):  # point the copied splits at the incomplete image folder
        doc = json.loads((real / "refcoco" / split / "records.json").read_text())
        doc["meta"]["image_root"] = str(images)
        (real / "refcoco" / split / "records.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match=r"refcoco/val: 1 of 2 images missing under .*000000000007\.jpg"):
        real_split(real / "refcoco" / "val")
    # through the command: exit status 2 and the message, no traceback, nothing written
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["profiles"]["paper"]["smcim"] |= {"train_sets": ["refcoco"], "eval_sets": ["refcoco"]}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.copytree(root / "checkpoints", tmp_path / "checkpoints")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VLREPRO_PARAMS", raising=False)
    from vlrepro.smcim.__main__ import main

    assert main(["run", "--variant", "full", "--seed", "0"]) == 2
    assert "refcoco/val: 1 of 2 images missing" in capsys.readouterr().err
    assert not (tmp_path / "reports").exists()
