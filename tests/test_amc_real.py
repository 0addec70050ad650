"""AMC on real data (amc.source: real, the paper profile), end to end on a fixture the test writes: JPEG files,
Visual Genome's region JSON, Flickr30k Entities' Sentences/Annotations, RefCOCO+ refer pickles and Karpathy's
COCO captions, converted by the `data` stage's function; then the ALBEF pre-training phase and one AMC run
through their command with a tiny model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from paper_project import paper_project
from PIL import Image, ImageDraw
from test_real_flickr30k import BOX, _object, write_flickr
from test_real_vg import _region, write_vg
from test_smcim_real import write_fixture as write_refer_fixture

from vlrepro.amc.data import RegionPairs, grounding_set, open_split
from vlrepro.amc.pretrain import caption_pairs
from vlrepro.data.images import Letterbox
from vlrepro.data.real.errors import DatasetError
from vlrepro.models import save_pretrained
from vlrepro.models.backbones import ViTConfig
from vlrepro.models.clip import CLIPConfig, DualEncoder
from vlrepro.models.text import TextConfig, TextEncoder, train_wordpiece

SIZE = 32  # the tiny ViT's input: every image is letterboxed to it

# Flickr30k Entities: (image id, width, height, man's colour, dog's colour), two captions each; landscape and
# portrait images
FLICKR = [("1001", 120, 80, "red", "blue"), ("1002", 80, 120, "green", "yellow"), ("1003", 100, 60, "red", "blue"),
          ("1004", 60, 100, "green", "yellow"), ("1005", 90, 90, "red", "blue"),
          ("1006", 150, 100, "green", "yellow")]  # fmt: skip


def _flickr(root: Path, images: Path) -> Path:
    sentences, annotations = {}, {}
    for image_id, w, h, man, dog in FLICKR:
        left, right = (2, 2, w // 2 - 8, h - 2), (w // 2 + 8, 2, w - 2, h - 2)  # apart from the centre
        sentences[image_id] = [
            f"[/EN#1/people A {man} man] stands beside [/EN#2/animals a {dog} dog] .",
            "[/EN#2/animals The dog] sits ."]  # fmt: skip
        annotations[image_id] = (w, h, [_object(["1"], BOX.format(*left)), _object(["2"], BOX.format(*right))])
        im = Image.new("RGB", (w, h), (90, 90, 90))
        draw = ImageDraw.Draw(im)
        draw.rectangle(left, fill=man)
        draw.rectangle(right, fill=dog)
        im.save(images / f"{image_id}.jpg", quality=90)
    splits = {"train": ["1001", "1002"], "val": ["1003", "1004"], "test": ["1005", "1006"]}
    return write_flickr(root, sentences, annotations, splits)


def _vg(root: Path) -> Path:
    (root / "VG_100K").mkdir(parents=True)
    image_data, regions = [], []
    # 1 is COCO's 2 (a Karpathy train image too), 2 is COCO's 5 (a RefCOCO+ testA image)
    for image_id, w, h, coco_id in ((1, 100, 70, 2), (2, 70, 100, 5)):
        image_data.append({"width": w, "height": h, "image_id": image_id, "coco_id": coco_id, "flickr_id": None,
                           "url": f"https://example.org/VG_100K/{image_id}.jpg"})
        regions.append({"id": image_id, "regions": [
            _region(10 * image_id, image_id, "a green square", 5, 5, w // 3, h // 3),
            _region(10 * image_id + 1, image_id, "the yellow bar", w // 2, h // 2, w // 3, h // 4)]})
        im = Image.new("RGB", (w, h), (90, 90, 90))
        ImageDraw.Draw(im).rectangle((5, 5, 5 + w // 3, 5 + h // 3), fill="green")
        im.save(root / "VG_100K" / f"{image_id}.jpg", quality=90)
    return write_vg(root, image_data, regions)


def write_fixture(root: Path) -> dict[str, str]:
    """Every dataset AMC reads, in its own format; returns the data.real paths."""
    refer, coco_train = write_refer_fixture(root)  # refcoco+ (and the other refer sets) over COCO JPEGs
    flickr_images = root / "flickr30k-images"
    flickr_images.mkdir()
    flickr = _flickr(root / "flickr30k_entities", flickr_images)
    vg = _vg(root / "vg")
    karpathy = {"dataset": "coco", "images": [
        {"filepath": "train2014", "filename": f"COCO_train2014_{k:012d}.jpg", "imgid": k, "split": "train",
         "cocoid": k, "sentids": [k], "sentences": [{"raw": "A red thing and a blue thing.", "imgid": k,
                                                      "sentid": k, "tokens": []}]}
        for k in (1, 2, 3)]}  # fmt: skip
    (root / "dataset_coco.json").write_text(json.dumps(karpathy))
    return {"refer": str(refer), "coco_train2014": str(coco_train), "flickr30k_entities": str(flickr),
            "flickr30k_images": str(flickr_images), "visual_genome": str(vg),
            "coco_karpathy": str(root / "dataset_coco.json"), "coco_images": str(coco_train.parent)}  # fmt: skip


TINY = {  # the paper profile's recipe, shrunk: a few steps, small batches
    "steps": 2, "batch_size": 4, "warmup_steps": 0, "vision_trainable_blocks": 1, "text_layers": 1, "workers": 2,
    "pretrain": {"sets": ["captions", "flickr", "vg"], "steps": 2, "batch_size": 4, "warmup_steps": 0,
                 "eval_every": 0, "eval_samples": 4},
    "eval": {"max_samples": None, "batch_size": 8, "heatmap_images": 2, "curve_every": 1, "curve_samples": 4},
}  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A scratch project: params.yaml (paper profile), data/real converted, tiny CLIP + text checkpoints."""
    root = tmp_path_factory.mktemp("amc_real")
    paths = write_fixture(root / "datasets")
    P, _ = paper_project(root, "amc", paths, TINY)
    torch.manual_seed(0)
    texts = ["a red man", "a blue dog", "the dog sits", "a green square", "the yellow bar", "red thing on the left"]
    tok = train_wordpiece(texts * 4, vocab_size=80)
    text_cfg = TextConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, num_layers=2, num_heads=2,
                          intermediate_size=32)  # fmt: skip
    vision = ViTConfig(img_size=SIZE, patch_size=8, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0)
    ckpt = root / "checkpoints" / "pretrain"
    save_pretrained(DualEncoder(CLIPConfig(vision=vision, text=text_cfg, embed_dim=8), tok), ckpt / "clip")
    save_pretrained(TextEncoder(text_cfg, tok), ckpt / "text")
    return root, P.amc


def test_real_sets_keep_their_world_names_and_boxes_follow_the_letterbox(project):
    root, p = project
    data = root / "data" / "real"
    flickr = open_split(data, "flickr", "test", "real")
    g = grounding_set(flickr, "flickr/test", image_size=SIZE)
    # one query per phrase: 3 phrases per image over its two captions, two images
    assert g.texts == ["A red man", "a blue dog", "The dog", "A green man", "a yellow dog", "The dog"]
    assert g.images.shape == (2, SIZE, SIZE, 3) and g.image_index == [0, 0, 0, 1, 1, 1]
    # 1005 is 90x90 (fills the input), 1006 is 150x100 (scaled by 32/150, 5 px of padding above and below);
    # the XML's 1-based (2, 2, 67, 98) is (1, 1, 67, 98) in our pixels
    lb = Letterbox.fit(150, 100, SIZE)
    assert (lb.pad_x, lb.pad_y) == (0, 5)
    np.testing.assert_allclose(g.boxes[3][0], lb.to_input([(1, 1, 67, 98)])[0])
    np.testing.assert_allclose(g.boxes[0][0], np.array([1, 1, 37, 88]) * SIZE / 90)
    # the proposals are the image's annotated boxes (both entities), in input pixels too
    assert len(g.proposals[3]) == 2 and g.proposals[3][0] == g.boxes[3][0]
    # controls: another phrase of the same image about the other box; captions with a negative of another image
    assert g.other_texts[:3] == ["a blue dog", "A red man", "A red man"]
    assert g.captions is not None and g.captions.image_index == [0, 0, 1, 1]
    own = {0: {"A red man stands beside a blue dog .", "The dog sits ."},
           1: {"A green man stands beside a yellow dog .", "The dog sits ."}}
    assert g.captions.texts == ["A red man stands beside a blue dog .", "The dog sits .",
                                "A green man stands beside a yellow dog .", "The dog sits ."]  # fmt: skip
    assert all(n in own[1 - i] - own[i] for i, n in zip(g.captions.image_index, g.captions.negatives, strict=True))
    # the image really is the letterboxed file: the man's box is green, the padding is the pad colour
    assert g.images[1, 16, 5, 1] > 100 and g.images[1, 16, 5, [0, 2]].max() < 60  # green
    assert tuple(g.images[1, 1, 16]) == (124, 116, 104)

    # queries of the second image only (the first record has no phrase): the images are renumbered from 0
    skip = replace(flickr, records=[replace(flickr.records[2], phrases=()), *flickr.records[:2]])
    first = grounding_set(skip, "flickr/test", limit=3, image_size=SIZE)
    assert first.image_index == [0, 0, 0] and len(first.images) == 1
    assert first.images[0, 16, 5, 0] > 150 and first.images[0, 16, 5, 2] < 100  # 1005's red man, not 1006
    # RefCOCO+: the proposals are the image's COCO objects (three per image), in input pixels
    refer = open_split(data, "refcoco+", "testA", "real")
    r = grounding_set(refer, "refcoco+/testA", image_size=SIZE)
    objects = refer.meta["objects"][refer.records[0].image_id]
    lb = Letterbox.fit(refer.records[0].width, refer.records[0].height, SIZE)
    assert len(r.proposals[0]) == 3 and np.allclose(r.proposals[0], lb.to_input(objects))
    assert r.captions is None  # expressions span their whole text: the phrase pairs are the captions

    pairs = RegionPairs(open_split(data, "vg", "train", "real"), _tokenizer(root), 8, p.augment, 0.15,
                        image_size=SIZE)  # fmt: skip
    assert len(pairs) == 4 and pairs.index.tolist() == [0, 0, 1, 1]
    np.testing.assert_allclose(pairs.boxes[0].numpy(), Letterbox.fit(100, 70, SIZE).to_input([(5, 5, 38, 28)])[0],
                               rtol=1e-6)  # fmt: skip
    item = pairs[0]
    assert item["image"].shape == (3, SIZE, SIZE) and item["mask"].shape == (SIZE, SIZE) and item["mask"].sum() > 0

    # the pre-training phase's pairs: VG's image 1 is COCO's 2, so its regions share that caption image's id
    captions, flickr_pairs, vg = caption_pairs(p, data, _tokenizer(root), SIZE).datasets
    coco = {r.image_id: int(i) for r, i in zip(captions.records, captions.image_ids, strict=True)}
    assert vg.image_ids.tolist() == [coco["2"]] * 2 + [int(vg.image_ids[2])] * 2
    ids = [*coco.values(), *set(flickr_pairs.image_ids.tolist()), int(vg.image_ids[2])]
    assert len(ids) == len(set(ids)) == 3 + 2 + 1


def _tokenizer(root: Path):
    from vlrepro.models import load_pretrained

    return load_pretrained(root / "checkpoints" / "pretrain" / "clip").text.tokenizer


def test_missing_conversion_or_image_names_the_key_and_file(project, tmp_path):
    root, _ = project
    with pytest.raises(DatasetError, match=r"refcoco\+/testA: missing.*data\.real\.refer"):
        open_split(tmp_path, "refcoco+", "testA", "real")
    with pytest.raises(DatasetError, match="'web' has no real counterpart"):
        open_split(root / "data" / "real", "web", "train", "real")
    missing = Path(json.loads((root / "data" / "real" / "flickr30k_entities" / "val" / "records.json").read_text())
                   ["meta"]["image_root"]) / "1003.jpg"  # fmt: skip
    moved = missing.with_suffix(".bak")
    missing.rename(moved)
    try:
        with pytest.raises(DatasetError, match=r"1 of 2 images missing .*1003\.jpg.*data\.real\.flickr30k_images"):
            open_split(root / "data" / "real", "flickr", "val", "real")
    finally:
        moved.rename(missing)


def test_web_captions_have_no_real_counterpart(project):
    _, p = project
    with pytest.raises(ValueError, match=r"\['web'\] have no real counterpart"):
        type(p).model_validate({**p.model_dump(), "pretrain": {**p.pretrain.model_dump(), "sets": ["web"]}})


def test_pretrain_and_run_in_the_paper_profile(project, monkeypatch):
    root, p = project
    from vlrepro.amc.__main__ import main

    monkeypatch.chdir(root)
    monkeypatch.delenv("VLREPRO_PARAMS", raising=False)
    assert main(["pretrain"]) == 0
    assert (root / "checkpoints" / "albef" / "history.json").is_file()
    assert main(["run", "--variant", "amc", "--seed", "0"]) == 0
    doc = json.loads((root / "reports" / "metrics" / "amc" / "amc-0.json").read_text())
    m = doc["metrics"]
    assert sorted(m["flickr"]) == ["test", "val"] and sorted(m["refcoco+"]) == ["testA", "testB", "val"]
    test = m["flickr"]["test"]
    assert test["n"] == 6 and test["n_other_phrase"] == 6
    # the centre point of a letterboxed image is the original's centre: it misses both halves' boxes here
    assert test["pointing_centre"] == 0.0
    # 4 val captions, each with a negative caption of the other image: 8 matching pairs
    assert m["flickr"]["val"]["n_caption_itm_pairs"] == 8 and m["refcoco+"]["testA"]["n"] == 3
    assert {g["metric"] for g in doc["gates"]} == {"flickr.test.pointing_paired", "flickr.test.pointing",
                                                   "flickr.val.caption_itm_acc"}  # fmt: skip
    run_dir = root / "runs" / "amc" / "amc-0"
    # VG image 2 is a RefCOCO+ testA image: its two regions do not train
    held_out = {"regions": 2, "held_out_images": {"images": 1, "records": 2}}
    assert json.loads((run_dir / "train_set.json").read_text()) == held_out
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["step"] for h in history if "val_pointing" in h] == [0, 1, 2]
    with np.load(run_dir / "heatmaps.npz") as z:
        assert z["flickr.test/image"].shape == (2, SIZE, SIZE, 3) and z["flickr.test/heat"].shape == (2, SIZE, SIZE)
