"""AMC learning gates: the controls beside the pointing game (centre point, another phrase of the same image),
ITM accuracy with random negatives, and the gate rows the runs write (vlrepro.report.gates reads them)."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from vlrepro.amc.config import AMCParams
from vlrepro.amc.data import (
    GroundingSet,
    MatchPairs,
    grounding_set,
    itm_negatives,
    other_phrases,
    world_caption_linker,
    world_linker,
)
from vlrepro.amc.model import ALBEF
from vlrepro.amc.run import (
    check_controls,
    evaluate_grounding,
    evaluate_itm,
    evaluate_splits,
    gate_rows,
    itm_accuracy,
    match_logits,
)
from vlrepro.data.records import Phrase, Split
from vlrepro.data.world.captions import caption_true
from vlrepro.data.world.config import WorldConfig
from vlrepro.data.world.resolver import resolve
from vlrepro.data.world.suite import build_split
from vlrepro.io import write_metrics
from vlrepro.metrics.pointing import centre_hits, centre_point, pointing_hits
from vlrepro.models.backbones import ViTConfig
from vlrepro.models.clip import CLIPConfig, DualEncoder
from vlrepro.models.text import TextConfig, train_wordpiece
from vlrepro.report.collect import collect
from vlrepro.report.gates import evaluate_gates

ROOT = Path(__file__).resolve().parents[1]

# --- centre-point control -------------------------------------------------------------------------------


def test_centre_point_is_the_centre_of_the_centre_pixel():
    assert centre_point(5, 7) == (3.5, 2.5)  # odd sizes: the image centre itself
    assert centre_point(64, 64) == (32.5, 32.5)  # even: pixel (32, 32), half a pixel off the corner point
    with pytest.raises(ValueError):
        centre_point(0, 4)


def test_centre_hits_inside_any_box_strictly():
    boxes = [
        [(30.0, 30.0, 40.0, 40.0)],  # contains (32.5, 32.5)
        [(0.0, 0.0, 10.0, 10.0)],  # far away
        [(0.0, 0.0, 10.0, 10.0), (32.0, 20.0, 33.0, 60.0)],  # the second box, a 1-pixel column around it
        [(32.5, 0.0, 64.0, 64.0)],  # the point lies on the left edge: a miss, as in the pointing game
    ]
    assert centre_hits(64, 64, boxes) == [True, False, True, False]
    # the same rule as the pointing game: an arg-max at the centre pixel scores exactly the same
    heat = torch.zeros(len(boxes), 64, 64)
    heat[:, 32, 32] = 1.0
    assert pointing_hits(heat, boxes) == centre_hits(64, 64, boxes)
    with pytest.raises(ValueError):
        centre_hits(64, 64, [[]])


# --- another phrase of the same image -------------------------------------------------------------------

A, B, C, D = (0.0, 0.0, 8.0, 8.0), (10.0, 10.0, 20.0, 20.0), (1.0, 1.0, 5.0, 5.0), (6.0, 6.0, 9.0, 9.0)


def test_other_phrase_same_image_different_text_other_objects_next_in_order():
    index = [0, 0, 0, 0, 1, 2, 2, 0]
    texts = ["a red circle", "a blue square", "a red circle", "the circle", "a star", "a dome", "A  dome",
             "two shapes"]
    boxes = [[A], [B], [A], [A], [C], [C], [D], [A, B]]
    got = other_phrases(index, texts, boxes)
    # q0 -> q1 (next, other text, other box); q1 -> q2 (a different text on another object, though equal to
    # q0's); q2 -> q3? same box A: no; q7 shares A; wraps to q0 (same text), q1 (B): yes.
    # q3 "the circle" names box A like q0/q2: skipped, q7 shares A: skipped, wrap -> q1.
    # q4: alone on its image. q5/q6: the same text up to case and spaces. q7 covers A and B: every other
    # phrase of image 0 names one of them.
    assert got == [1, 2, 1, 1, None, None, None, None]
    assert other_phrases(index, texts, boxes) == got  # deterministic
    for i, j in enumerate(got):
        if j is not None:
            assert index[j] == index[i] and texts[j] != texts[i] and j != i


# --- a small world split (the real generator) ----------------------------------------------------------


@pytest.fixture(scope="module")
def flickr_split():
    cfg = WorldConfig()
    cfg = cfg.model_copy(update={"flickr": cfg.flickr.model_copy(update={"val": 12})})
    return build_split(cfg, "flickr", "val")


def test_world_grounding_set_controls(flickr_split):
    data = grounding_set(flickr_split, "flickr/val", limit=10)
    full = grounding_set(flickr_split, "flickr/val")
    assert len(data) == 10 and data.other_texts == full.other_texts[:10]  # chosen among the whole split
    assert sum(t is not None for t in data.other_texts) >= 5
    texts_of: dict[int, set[str]] = {}
    for image, text in zip(full.image_index, full.texts, strict=True):
        texts_of.setdefault(image, set()).add(text)
    meta = flickr_split.meta
    for i in range(len(data)):
        image = data.image_index[i]
        if data.other_texts[i] is not None:
            assert data.other_texts[i] in texts_of[image] and data.other_texts[i] != data.texts[i]
        neg = data.negative_texts[i]
        assert neg is not None and neg not in texts_of[image]
        # not true of this image by the world's own resolver
        lang = meta["language"]
        assert not resolve(neg, meta["scenes"][image], meta["image_size"], lang["location_margin"],
                           lang["near_distance"])
    # seeded by the split name, not by anything of the run: the same pairs every time
    assert grounding_set(flickr_split, "flickr/val", limit=10).negative_texts == data.negative_texts


def test_itm_negatives_rules(flickr_split):
    index = [0, 0, 1, 2, 2]
    texts = ["a dome", "a star", "a dome", "a red ring", "a cross"]
    # query 0: image 1's only text is its own ("a dome"); image 2's texts are fine
    for seed in range(5):
        negs = itm_negatives(index, texts, 5, seed)
        assert negs[0] in {"a red ring", "a cross"} and negs[1] in {"a red ring", "a cross"}
        assert negs[2] in {"a star", "a red ring", "a cross"}  # never its own "a dome" (from image 0 either)
        assert negs[3] in {"a dome", "a star"} and negs[4] in {"a dome", "a star"}
        assert itm_negatives(index, texts, 5, seed) == negs
    # a linker that says "a cross" is true of image 0 removes it there
    negs = itm_negatives(index, texts, 2, 0, linked=lambda text, image: text == "a cross" and image == 0)
    assert negs == ["a red ring", "a red ring"]
    assert itm_negatives([0, 0], ["a dome", "a star"], 2, 0) == [None, None]  # no other image
    assert itm_negatives([0, 1], ["a dome", "a dome"], 2, 0) == [None, None]  # only the same text elsewhere
    linked = world_linker(flickr_split)
    scene0 = flickr_split.meta["scenes"][0]
    assert linked is not None and linked(f"a {scene0[0]['category']}", 0)


def test_caption_pairs_whole_captions_with_negatives_the_world_calls_false(flickr_split):
    data = grounding_set(flickr_split, "flickr/val", limit=5)
    records = flickr_split.records
    covering, seen = [], 0  # the records the first 5 phrase queries come from
    for k, r in enumerate(records):
        if seen >= 5:
            break
        if r.phrases:
            covering.append(k)
            seen += len(r.phrases)
    caps = data.captions
    assert caps is not None and caps.texts == [records[k].text for k in covering]
    assert caps.image_index == [int(records[k].image) for k in covering]
    for image, text in zip(data.image_index, data.texts, strict=True):  # each query is part of a kept caption
        assert any(text in c for i, c in zip(caps.image_index, caps.texts, strict=True) if i == image)
    meta, lang = flickr_split.meta, flickr_split.meta["language"]
    for image, text, neg in zip(caps.image_index, caps.texts, caps.negatives, strict=True):
        assert neg is not None and neg != text and neg in {r.text for r in records}
        assert not caption_true(neg, meta["scenes"][image], meta["backgrounds"][image], meta["image_size"],
                                lang["location_margin"], lang["near_distance"])
    linked = world_caption_linker(flickr_split)
    assert linked is not None and all(linked(t, i) for i, t in zip(caps.image_index, caps.texts, strict=True))
    assert grounding_set(flickr_split, "flickr/val", limit=5).captions == caps  # seeded by the split name
    # referring expressions (one phrase spanning the text) have no captions beyond the queries themselves
    refer = Split([replace(r, phrases=(Phrase(0, len(r.text), (0,)),)) for r in records if r.boxes],
                  flickr_split.images, None, meta)
    assert grounding_set(refer, "refcoco/val").captions is None


# --- a tiny ALBEF ---------------------------------------------------------------------------------------

TEXTS = ["a red circle left of a blue square", "the green star", "a big striped ring right of a cross"]


@pytest.fixture(scope="module")
def tiny() -> ALBEF:
    torch.manual_seed(0)
    tok = train_wordpiece(TEXTS, vocab_size=96)
    vision = ViTConfig(img_size=24, patch_size=8, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0)
    text = TextConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, num_layers=3, num_heads=2,
                      intermediate_size=32, mlm_head=False)
    clip = DualEncoder(CLIPConfig(vision=vision, text=text, embed_dim=8), tok)
    return ALBEF.from_dual_encoder(clip, text_layers=1, vision_trainable_blocks=1).eval()


def _set(name: str, other: bool = True) -> GroundingSet:
    images = np.random.default_rng(0).integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
    boxes = [[(0.0, 0.0, 12.0, 12.0)], [(12.0, 12.0, 24.0, 24.0)], [(6.0, 6.0, 18.0, 18.0)], [(0.0, 12.0, 12.0, 24.0)]]
    texts = ["a red circle", "a blue square", "the green star", "a big striped ring"]
    others = ["a blue square", "a red circle", None, None] if other else None
    negatives = ["the green star", "the green star", "a red circle", None]
    captions = MatchPairs([0, 1, 2], ["a red circle and a blue square", "the green star", "a big striped ring"],
                          ["the green star", None, "a red circle and a blue square"])
    return GroundingSet(name, images, [0, 0, 1, 2], texts, boxes, [[(0.0, 0.0, 24.0, 24.0)]] * 4, others, negatives,
                        captions)


def test_itm_accuracy_by_hand():
    pos = torch.tensor([[0.0, 2.0], [1.0, 0.0], [0.0, 0.1]])  # p(match) 0.88, 0.27, 0.52: 2 of 3 right
    neg = torch.tensor([[3.0, 0.0], [0.0, 0.0], [0.0, 5.0]])  # 0.05, 0.5 (a tie: no match), 0.99: 2 of 3
    assert itm_accuracy(pos, neg) == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="as many negatives"):
        itm_accuracy(pos, neg[:2])
    with pytest.raises(ValueError):
        itm_accuracy(pos[:0], neg[:0])


def test_evaluate_itm_scores_each_query_and_its_negative(tiny):
    data = _set("flickr/val")
    got = evaluate_itm(tiny, data, batch=2)
    assert got["n_itm_pairs"] == 6  # the last query has no negative: out, with its positive (1:1)
    pos = match_logits(tiny, data.images, [0, 0, 1], data.texts[:3])
    neg = match_logits(tiny, data.images, [0, 0, 1], ["the green star", "the green star", "a red circle"])
    assert got["itm_acc"] == pytest.approx(itm_accuracy(pos, neg))
    # whole captions: the two that have a negative, each against it on its own image
    assert got["n_caption_itm_pairs"] == 4
    pos = match_logits(tiny, data.images, [0, 2], ["a red circle and a blue square", "a big striped ring"])
    neg = match_logits(tiny, data.images, [0, 2], ["the green star", "a red circle and a blue square"])
    assert got["caption_itm_acc"] == pytest.approx(itm_accuracy(pos, neg))
    # pairs are scored one by one: the batch size does not matter
    assert torch.allclose(match_logits(tiny, data.images, [0, 1], ["a red circle", "a red circle"], batch=1),
                          match_logits(tiny, data.images, [0, 1], ["a red circle", "a red circle"]), atol=1e-5)
    assert evaluate_itm(tiny, _set("x").subset([3])) == {}


def test_other_phrase_control_uses_the_query_boxes(tiny):
    data = _set("flickr/test")
    scores, heat, hits = evaluate_grounding(tiny, data, layer=0, batch=3)
    assert scores["n"] == 4 and scores["n_other_phrase"] == 2
    assert scores["pointing_paired"] == pytest.approx(sum(hits["pointing"][:2]) / 2)
    assert scores["pointing_centre"] == pytest.approx(sum(centre_hits(24, 24, data.boxes)) / 4)
    assert hits["other_phrase"][2:] == [None, None] and all(h in (0, 1) for h in hits["other_phrase"][:2])
    # the control is the other phrase's heatmap scored against the *query's* boxes
    swapped = data.subset([1, 0])
    swapped_heat = evaluate_grounding(tiny, swapped, layer=0)[1]
    assert hits["other_phrase"][:2] == [int(h) for h in pointing_hits(swapped_heat, [data.boxes[0], data.boxes[1]])]
    # "another phrase" equal to the query itself: a phrase-blind control would score exactly the paired value
    same = GroundingSet(data.name, data.images, data.image_index, data.texts, data.boxes, data.proposals,
                        list(data.texts), data.negative_texts)
    s = evaluate_grounding(tiny, same, layer=0)[0]
    assert s["pointing_other_phrase"] == s["pointing_paired"] == s["pointing"]
    # no query with another phrase: no control number (and no made-up one)
    assert "pointing_other_phrase" not in evaluate_grounding(tiny, _set("x", other=False), layer=0)[0]


# --- gate rows ------------------------------------------------------------------------------------------


def _variants() -> list[str]:
    """Every variant of the default params and of params.yaml (names only: the file is being edited)."""
    names = set(AMCParams().variants)
    names |= set(yaml.safe_load((ROOT / "params.yaml").read_text())["amc"]["variants"])
    return sorted(names)


def test_gate_rows_for_every_variant():
    variants = _variants()
    rows = gate_rows(variants)
    assert len(rows) == 3 * len(variants)
    for v in variants:
        own = [r for r in rows if r["variant"] == v]
        got = {(r["metric"], r.get("control_metric"), r.get("control_value"), r["rule"], r["margin"]) for r in own}
        assert got == {
            ("flickr.test.pointing_paired", "flickr.test.pointing_other_phrase", None, "plus", 0.10),
            ("flickr.test.pointing", "flickr.test.pointing_centre", None, "plus", 0.20),
            ("flickr.val.caption_itm_acc", None, 0.5, "min", 0.80),
        }
        for r in own:
            assert r["paper"] == "AMC" and r["control"] and ("control_metric" in r) != ("control_value" in r)
    assert gate_rows(["amc"]) == gate_rows(["amc"])  # every seed file of a variant carries the same rows
    # a gate on a split that is not evaluated is left out (its metric would not exist)
    assert [r["metric"] for r in gate_rows(["amc"], {"flickr": ("test",)})] == [
        "flickr.test.pointing_paired", "flickr.test.pointing"]


def test_gate_rows_name_metrics_the_evaluation_writes(tiny, tmp_path):
    """The rows go through write_metrics' own check (metric names of the file's variant) and the report's
    evaluation, on metrics computed by the same code as a run's."""
    sets = {"flickr.val": _set("flickr/val"), "flickr.test": _set("flickr/test")}
    metrics, _, hits = evaluate_splits(tiny, sets, layer=0, batch=4)
    assert set(hits) == set(sets) and len(hits["flickr.test"]["pointing"]) == 4
    gates = gate_rows(["amc"], {"flickr": ("val", "test")})
    check_controls(sets, gates)
    for seed in (0, 1):
        write_metrics(tmp_path / "amc" / f"amc-{seed}.json", "amc", metrics, variant="amc", seed=seed, gates=gates)
    table = evaluate_gates(collect(tmp_path))
    assert len(table) == 3 and set(table["variant"]) == {"amc"}
    test = metrics["flickr"]["test"]
    bars = dict(zip(table["control"], table["bar"], strict=True))
    assert bars["centre point"] == pytest.approx(test["pointing_centre"] + 0.20)
    assert bars["same model, another phrase of the image"] == pytest.approx(test["pointing_other_phrase"] + 0.10)
    assert bars["chance (1:1 random negatives)"] == pytest.approx(0.80)


def test_check_controls_fails_before_training_without_a_control():
    gates = gate_rows(["amc"], {"flickr": ("val", "test")})
    with pytest.raises(ValueError, match="another phrase"):
        check_controls({"flickr.val": _set("flickr/val"), "flickr.test": _set("flickr/test", other=False)}, gates)
    with pytest.raises(ValueError, match="not evaluated"):
        check_controls({"flickr.test": _set("flickr/test")}, gates)
    with pytest.raises(ValueError, match="whole caption"):  # the ITM gate's pairs are the images' captions
        check_controls({"flickr.val": replace(_set("flickr/val"), captions=None), "flickr.test": _set("flickr/test")},
                       gates)
