"""GLIP's data, decoding and prompt tuning on a tiny world: what each training sample asks of the model, what
a known output decodes to, and that prompt tuning trains nothing but its offset."""

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from vlrepro.data.records import Phrase, Record, Split, load_split
from vlrepro.data.world.config import WorldConfig
from vlrepro.data.world.suite import build_suite
from vlrepro.glip.config import EvalParams, GLIPParams
from vlrepro.glip.data import GroundingSamples, base_ids, category_names, coco_ground_truth, novel_ids
from vlrepro.glip.evaluate import detect
from vlrepro.glip.model import GLIP, GLIPConfig, GLIPHead, GLIPOutput
from vlrepro.glip.prompts import join_classes, span_map
from vlrepro.glip.pseudo import noun_phrases, pseudo_label
from vlrepro.glip.transfer import FixedPrompt, k_shot_images
from vlrepro.models.backbones import CNNBackbone, CNNConfig
from vlrepro.models.text import TextConfig, TextEncoder, train_wordpiece

TINY = {
    "referring": {"train": 2, "val": 2, "testA": 2, "testB": 2},
    "flickr": {"train": 6, "val": 2, "test": 2},
    "vg": {"train": 4, "val": 2},
    "det": {"train": 12, "test": 6},
    "odinw": {"shots": 2, "test": 2},
    "captions": {"train": 2, "val": 2, "test": 2},
    "web": {"train": 2},
    "cub": {"train": 16, "val": 2, "test": 2},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world")
    build_suite(WorldConfig.model_validate({"seed": 0, **TINY}), out, progress=False)
    return out


@pytest.fixture(scope="module")
def tok(world):
    det, flickr = load_split(world / "det" / "train"), load_split(world / "flickr" / "train")
    texts = [". ".join(category_names(det))] + [r.text for r in flickr.records]
    return train_wordpiece(texts, vocab_size=200)


def test_detection_samples_prompt_base_classes_and_mark_their_tokens(world, tok):
    det = load_split(world / "det" / "train")
    names, base = category_names(det), set(base_ids(det))
    samples = GroundingSamples([det], tok, max_tokens=40)
    torch.manual_seed(0)
    for i in range(len(samples)):
        image, text, boxes, spans = samples[i]
        record = det.records[i]
        assert image.shape == (3, det.images.shape[1], det.images.shape[2])
        assert len(boxes) == len(spans) == sum(c in base for c in record.labels)
        in_prompt = text.rstrip(".").split(". ")
        assert set(in_prompt) <= {names[c] for c in base}  # novel classes are never prompted
        kept = [c for c in record.labels if c in base]
        assert [text[a:b] for [(a, b)] in spans] == [names[c] for c in kept]  # each box marks its class name
    batch = samples.collate([samples[0], samples[1]])
    for maps, item in zip(batch["maps"], (samples[0], samples[1]), strict=True):
        assert maps.shape == (len(item[2]), batch["input_ids"].shape[1]) and bool(maps.any(1).all())


def test_grounding_samples_mark_every_phrase_of_a_box(world, tok):
    flickr = load_split(world / "flickr" / "train")
    samples = GroundingSamples([flickr], tok, max_tokens=40)
    record = flickr.records[samples.index[0][1]]
    _, text, boxes, spans = samples[0]
    assert text == record.text
    named = sorted({b for ph in record.phrases for b in ph.box_ids})
    assert boxes.tolist() == [list(record.boxes[b]) for b in named]
    for b, s in zip(named, spans, strict=True):
        assert sorted(s) == sorted((ph.start, ph.end) for ph in record.phrases if b in ph.box_ids)



def test_detection_images_are_repeated_to_their_share_of_a_mixed_set(world, tok):
    det, flickr = load_split(world / "det" / "train"), load_split(world / "flickr" / "train")
    n_det, n_ground = len(det.records), sum(bool(r.phrases) for r in flickr.records)
    for share in (0.5, 0.8):
        index = GroundingSamples([det, flickr], tok, 40, detection_share=share).index
        repeat = max(1, round(share / (1 - share) * n_ground / n_det))
        assert len(index) == repeat * n_det + n_ground
        assert sum(k == 0 for k, _ in index) == repeat * n_det
    assert len(GroundingSamples([det], tok, 40, detection_share=0.5).index) == n_det  # nothing to balance

def test_coco_ground_truth_splits_base_and_novel(world):
    det = load_split(world / "det" / "test")
    base, novel = coco_ground_truth(det, base_ids(det)), coco_ground_truth(det, novel_ids(det))
    labels = [c for r in det.records for c in r.labels]
    assert len(base["annotations"]) == sum(c in base_ids(det) for c in labels)
    assert len(novel["annotations"]) == sum(c in novel_ids(det) for c in labels)
    mine = sorted(a["bbox"] for a in base["annotations"] + novel["annotations"] if a["image_id"] == 0)
    assert mine == sorted([x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in det.records[0].boxes)  # COCO xywh
    assert all(a["area"] == a["bbox"][2] * a["bbox"][3] for a in base["annotations"])


class _Fixed(nn.Module):
    """Stands in for GLIP: one known output for every image of the batch."""

    grid_stride = 4

    def __init__(self, out: GLIPOutput):
        super().__init__()
        self.out = out

    def forward(self, images, input_ids, attention_mask):
        n = len(images)
        return GLIPOutput(self.out.logits.expand(n, -1, -1), self.out.boxes.expand(n, -1, -1),
                          self.out.centerness.expand(n, -1))  # fmt: skip


def test_detect_ranks_by_class_score_and_centerness_and_suppresses_duplicates(tok):
    names = ["circle", "square"]
    prompt = join_classes(names, [1, 0])  # "square. circle."
    length = 5  # [CLS] square . circle . -> cut: the square's token is 1, the circle's 3
    logits = torch.full((1, 3, length), -20.0)
    logits[0, 0, 1] = logits[0, 1, 1] = 2.0  # cells 0 and 1: square (sigmoid 0.88), overlapping boxes
    logits[0, 2, 3] = 0.0  # cell 2: circle (sigmoid 0.5)
    boxes = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 2.0, 2.1], [3.0, 3.0, 4.0, 4.0]]])
    model = _Fixed(GLIPOutput(logits, boxes, torch.tensor([[0.0, -1.0, 20.0]])))
    out = detect(model, np.zeros((1, 16, 16, 3), np.uint8), prompt, tok, EvalParams(), length, [7])
    assert [(d["category_id"], d["image_id"]) for d in out] == [(0, 7), (1, 7)]  # class ids, not prompt order
    circle, square = out
    assert circle["score"] == pytest.approx((0.5 * 1.0) ** 0.5, abs=1e-6)
    assert square["score"] == pytest.approx((torch.sigmoid(torch.tensor(2.0)).item() * 0.5) ** 0.5, abs=1e-6)
    assert square["bbox"] == [0.0, 0.0, 8.0, 8.0] and circle["bbox"] == [12.0, 12.0, 4.0, 4.0]  # pixels, xywh


def test_prompt_tuning_trains_the_offset_and_nothing_else(tok):
    torch.manual_seed(0)
    cnn = CNNBackbone(CNNConfig(arch="resnet10t", channels=(8, 8, 8, 8)))
    text = TextEncoder(TextConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, num_layers=1, num_heads=2,
                                  intermediate_size=32, max_len=16), tok)  # fmt: skip
    model = GLIP(cnn, text, GLIPHead(GLIPConfig(visual_dim=32, text_dim=16, dim=16, align_dim=8, num_heads=2)), 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    offset = model.prompt_tuning(max_len=16)
    assert [p for p in model.parameters() if p.requires_grad] == [offset] and not offset.any()
    opt = torch.optim.AdamW([offset], lr=0.1)
    enc = text.tokenize(["circle. square."])
    model.train()
    for _ in range(3):
        out = model(torch.rand(2, 3, 32, 32), enc["input_ids"].expand(2, -1), enc["attention_mask"].expand(2, -1))
        loss = out.logits.masked_fill(torch.isinf(out.logits), 0).sigmoid().sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # batch-norm statistics included
    assert offset.abs().sum() > 0


def test_variants_are_validated_overrides():
    p = GLIPParams(variants={"late": {"model.fusion_layers": 0}, "gold": {"train.sets": ["det", "flickr"]}})
    assert p.variant("late").model.fusion_layers == 0 and p.variant("gold").train.sets == ("det", "flickr")
    with pytest.raises(ValueError, match="glip.variants.bad"):
        GLIPParams(variants={"bad": {"train.sets": ["coco"]}})
    with pytest.raises(ValueError, match="not a key"):
        GLIPParams(variants={"bad": {"model.depth": 3}})
    assert json.loads(GLIPParams().model_dump_json())["train"]["sets"] == ["det"]


def test_noun_phrases_chunk_modifiers_up_to_a_shape_noun():
    text = "there are six shapes, among them a little solid ring, two yellow triangles and a disc on a grey floor."
    assert [text[a:b] for a, b in noun_phrases(text)] == ["little solid ring", "two yellow triangles", "disc"]
    assert noun_phrases("a plain dark background with nothing.") == []


def test_pseudo_labels_keep_confident_boxes_per_phrase(tok):
    text = "a red circle and two squares on grass."
    phrases = noun_phrases(text)  # "red circle", "two squares"
    length = 12
    maps = span_map(tok, text, [[s] for s in phrases], length)
    logits = torch.full((1, 3, length), -20.0)
    logits[0, 0, maps[0]] = 3.0  # cell 0: the circle, confident
    logits[0, 2, maps[1]] = -2.0  # cell 2: a square, not confident: sqrt(sigmoid(-2) × 1) = 0.34
    boxes = torch.tensor([[[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0], [2.0, 2.0, 4.0, 4.0]]])
    teacher = _Fixed(GLIPOutput(logits, boxes, torch.full((1, 3), 20.0)))
    record = Record(image_id="captions/train/0", image=0, width=16, height=16, text=text)
    captions = Split([record, replace(record, text="grass.")], images=np.zeros((1, 16, 16, 3), np.uint8), meta={})
    out = pseudo_label(teacher, captions, tok, length, threshold=0.5)
    assert len(out.records) == 1  # "grass." names no shape
    r = out.records[0]
    assert r.text == text and r.boxes == ((0.0, 0.0, 8.0, 8.0),)  # pixels; the square's score is below 0.5
    assert r.phrases == (Phrase(*phrases[0], (0,)),)


def test_real_source_stops_naming_what_is_missing(tmp_path):
    from vlrepro.data.real.errors import DatasetError
    from vlrepro.glip.run import train_and_evaluate

    with pytest.raises(DatasetError, match=r"coco_instances/val2017: missing.*data\.real\.coco_instances"):
        train_and_evaluate(GLIPParams(source="real"), "deep", 0, tmp_path, tmp_path)


def test_k_shot_images_give_every_class_k_boxes_and_fixed_prompts_name_them(world, tok):
    odinw = load_split(world / "odinw" / "train")
    classes = {c["id"] for c in odinw.meta["categories"]}
    for k in (1, 2):
        chosen = k_shot_images(odinw, k)
        counts = Counter(c for i in chosen for c in odinw.records[i].labels)
        assert all(counts[c] >= k for c in classes)
        assert chosen == list(range(len(chosen)))  # the first images, in order: nested as k grows
        last = Counter(c for i in chosen[:-1] for c in odinw.records[i].labels)
        assert any(last[c] < k for c in classes)  # no image more than needed
    samples = FixedPrompt([odinw], tok, 40)
    _, text, boxes, spans = samples[0]
    names = category_names(odinw)
    assert text == ". ".join(names) + "."
    assert [text[a:b] for [(a, b)] in spans] == [names[c] for c in odinw.records[0].labels] and len(boxes) == len(spans)


def test_swapped_names_move_every_name_within_its_group():
    from vlrepro.glip.run import swapped_names

    names = ["a", "b", "c", "d", "e"]
    for seed in range(5):
        out = swapped_names(names, [[0, 2, 4], [1, 3]], seed)
        assert all(o != n for o, n in zip(out, names, strict=True))
        assert sorted(out[i] for i in (0, 2, 4)) == ["a", "c", "e"] and sorted(out[i] for i in (1, 3)) == ["b", "d"]


def test_rich_prompts_rename_their_classes_and_make_a_paired_claim(world):
    from vlrepro.glip.__main__ import claims
    from vlrepro.glip.run import rich_names

    names = category_names(load_split(world / "det" / "test"))
    rich, enriched = rich_names(names, {"crescent": "crescent moon", "cross": "cross plus"})
    assert [names[i] for i in enriched] == ["crescent", "cross"]
    assert [rich[i] for i in enriched] == ["crescent moon", "cross plus"]
    assert [r for i, r in enumerate(rich) if i not in enriched] == [n for i, n in enumerate(names) if i not in enriched]
    with pytest.raises(ValueError, match=r"\['moon'\], which are not classes of det/test"):
        rich_names(names, {"moon": "crescent moon"})
    variants = {"deep": {}, "deep_gold": {"train.sets": ["det", "flickr"]}}
    plain = GLIPParams(variants=variants)
    assert not [r for r in claims(plain) if r["claim"] == "richer prompts help novel classes"]
    row = [r for r in claims(GLIPParams(variants=variants, eval={"rich_prompts": {"cross": "cross plus"}}))
           if r["claim"] == "richer prompts help novel classes"]  # fmt: skip
    assert row == [{"paper": "GLIP", "claim": "richer prompts help novel classes", "metric": "det_rich.enriched.AP",
                    "variant": "deep_gold", "reference_variant": "deep_gold", "higher_is_better": True,
                    "reference_metric": "det.enriched.AP"}]  # fmt: skip


def test_detection_ap_scores_extra_class_groups_apart(world, tok):
    from vlrepro.glip.evaluate import detection_ap

    det = load_split(world / "det" / "test")
    names = category_names(det)
    length = 12
    logits = torch.full((1, 4, length), -20.0)  # no cell fires: every AP is 0 (or -1 where a group is empty)
    model = _Fixed(GLIPOutput(logits, torch.zeros(1, 4, 4), torch.zeros(1, 4)))
    one = novel_ids(det)[:1]
    ap = detection_ap(model, det, tok, EvalParams(), length, names=names, groups={"first_novel": one})
    assert set(ap) == {"all", "base", "novel", "first_novel"} and ap["first_novel"]["AP"] <= 0
