"""Hand-checked units of the pre-training stage: REC cell targets and loss, flip augmentation, zero-shot, HF BERT."""

import math
import re

import numpy as np
import pytest
import torch
from torch import nn

from vlrepro.data.records import Record, Split
from vlrepro.data.world.captions import is_world_caption
from vlrepro.models.backbones import images_to_tensor
from vlrepro.models.rec import RECOutput
from vlrepro.models.text import TextConfig, TextEncoder, load_hf_text_encoder, text_config_from_bert, train_wordpiece
from vlrepro.pretrain import contrastive
from vlrepro.pretrain.attributes import IGNORE, AttributeImages, AttributeSpace
from vlrepro.pretrain.data import SceneImages
from vlrepro.pretrain.downstream import positive_cells, rec_loss

# --- positive_cells ------------------------------------------------------------------------------------
# A 4x4 grid has cell centres at 0.125, 0.375, 0.625, 0.875 on each axis; cell index = row * 4 + col.


def cells_of(mask: torch.Tensor) -> set[int]:
    return set(torch.nonzero(mask).flatten().tolist())


def test_positive_cells_block_of_centres():
    # xyxy (0.3, 0.1, 0.7, 0.7): x centres 0.375, 0.625 (cols 1, 2), y centres 0.125, 0.375, 0.625 (rows 0-2)
    box = torch.tensor([[0.5, 0.4, 0.4, 0.6]])
    pos = positive_cells(box, (4, 4))
    assert pos.shape == (1, 16) and pos.dtype == torch.bool
    assert cells_of(pos[0]) == {r * 4 + c for r in (0, 1, 2) for c in (1, 2)}


def test_positive_cells_box_smaller_than_a_cell_marks_its_centre_cell():
    boxes = torch.tensor(
        [
            [0.95, 0.20, 0.04, 0.04],  # no cell centre inside; centre in column 3, row 0
            [0.30, 0.80, 0.04, 0.04],  # column 1, row 3
            [1.00, 1.00, 0.02, 0.02],  # centre on the far edge: clamped into the last cell
        ]
    )
    pos = positive_cells(boxes, (4, 4))
    assert [cells_of(p) for p in pos] == [{3}, {13}, {15}]


def test_positive_cells_non_square_grid():
    # 2 rows x 4 columns; xyxy (0, 0, 0.5, 1) holds the centres of columns 0 and 1 in both rows
    pos = positive_cells(torch.tensor([[0.25, 0.5, 0.5, 1.0]]), (2, 4))
    assert cells_of(pos[0]) == {0, 1, 4, 5}


# --- rec_loss ------------------------------------------------------------------------------------------
# 2x2 grid, centres (0.25, 0.25) (0.75, 0.25) (0.25, 0.75) (0.75, 0.75).
# Expression 0: the top half, cxcywh (0.5, 0.25, 1, 0.5) -> positive cells {0, 1}.
# Expression 1: a tiny box at (0.1, 0.9) -> only the cell holding its centre, {2}.
TARGETS = torch.tensor([[0.5, 0.25, 1.0, 0.5], [0.1, 0.9, 0.05, 0.05]])
POSITIVES = [[0, 1], [2]]


class FixedREC(nn.Module):
    """Returns the given scores and cell boxes whatever the input, as a RECModel would."""

    def __init__(self, scores: torch.Tensor, cell_boxes: torch.Tensor):
        super().__init__()
        self.scores, self.cell_boxes = scores, cell_boxes

    def forward(self, images, input_ids, attention_mask) -> RECOutput:
        return RECOutput(self.cell_boxes[:, 0], self.scores, self.cell_boxes, (2, 2))


def rec_batch() -> dict[str, torch.Tensor]:
    return {
        "images": torch.zeros(2, 3, 8, 8),
        "input_ids": torch.ones(2, 3, dtype=torch.long),
        "attention_mask": torch.ones(2, 3, dtype=torch.long),
        "boxes": TARGETS.clone(),
    }


def garbage_boxes() -> torch.Tensor:
    """Cell boxes far from every target, so that any non-positive cell that leaks in shows in l1 / giou."""
    return torch.tensor([0.9, 0.1, 0.1, 0.1]).repeat(2, 4, 1)


def test_rec_loss_uniform_scores_and_exact_boxes():
    boxes = garbage_boxes()
    for b, cells in enumerate(POSITIVES):
        boxes[b, cells] = TARGETS[b]
    out = rec_loss(FixedREC(torch.zeros(2, 4), boxes), rec_batch())
    # -log(n_pos / n_cells): log(4 / 2) and log(4 / 1), averaged over the two expressions
    assert out["cell"].item() == pytest.approx((math.log(2) + math.log(4)) / 2)
    assert out["l1"].item() == pytest.approx(0.0, abs=1e-6)
    # torchvision's eps=1e-7 in the IoU denominator: ~1e-7 / 0.0025 for the tiny box, halved by the mean
    assert out["giou"].item() == pytest.approx(0.0, abs=1e-4)
    assert out["loss"].item() == pytest.approx(out["cell"].item() + out["l1"].item() + out["giou"].item())


def test_rec_loss_hand_computed_terms():
    scores = torch.tensor([[1.0, 2.0, 0.0, -1.0], [0.5, 0.0, 3.0, 1.0]])
    boxes = garbage_boxes()
    boxes[0, 0] = torch.tensor([0.6, 0.25, 1.0, 0.5])  # target moved right by 0.1
    boxes[0, 1] = TARGETS[0]  # exact
    boxes[1, 2] = torch.tensor([0.1, 0.9, 0.1, 0.1])  # same centre, twice the side: contains the target
    out = rec_loss(FixedREC(scores, boxes), rec_batch())

    def neg_log_mass(row: list[float], pos: list[int]) -> float:
        return -math.log(sum(math.exp(row[i]) for i in pos) / sum(math.exp(v) for v in row))

    cell = (neg_log_mass(scores[0].tolist(), POSITIVES[0]) + neg_log_mass(scores[1].tolist(), POSITIVES[1])) / 2
    # L1: expression 0 has two positives weighted 1/2 each: (0.1 + 0) / 2; expression 1: 0.05 + 0.05
    l1 = ((0.1 + 0.0) / 2 + 0.1) / 2
    # GIoU loss: the moved box overlaps 0.9 x 0.5 of a union 0.55 that equals its enclosing box -> 1 - 9/11;
    # a box inside another has GIoU = IoU = area ratio 0.0025 / 0.01 -> 1 - 1/4
    giou = ((2 / 11 + 0.0) / 2 + 0.75) / 2
    assert out["cell"].item() == pytest.approx(cell, rel=1e-5)
    assert out["l1"].item() == pytest.approx(l1, rel=1e-5)
    assert out["giou"].item() == pytest.approx(giou, rel=1e-5)
    assert out["loss"].item() == pytest.approx(cell + l1 + giou, rel=1e-5)


# --- AttributeImages flip ------------------------------------------------------------------------------

META = {
    "categories": [{"name": "circle", "novel": False}, {"name": "star", "novel": False}],
    "colours": ["red", "blue"],
    "patterns": ["plain"],
    "sizes": ["small", "large"],
}
SIDE = 16


def obj(category, colour, size, mask_id, box):
    return {"category": category, "colour": colour, "pattern": "plain", "size": size, "mask_id": mask_id, "box": box}


def asymmetric_scene(mirror: bool) -> SceneImages:
    """16x16 (4x4 cells of stride 4): a circle filling x 0-8, y 0-4; a star over x 10-12, y 8-16 (half of the
    cells it touches: labelled); with ``mirror``, the same scene built left-right mirrored by hand."""
    inst = np.zeros((1, SIDE, SIDE), np.uint8)
    inst[0, 0:4, 0:8] = 1
    inst[0, 8:16, 10:12] = 2
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, SIDE, SIDE, 3), dtype=np.uint8)
    boxes = [[0, 0, 8, 4], [10, 8, 12, 16]]
    if mirror:
        inst, image = inst[:, :, ::-1].copy(), image[:, :, ::-1].copy()
        boxes = [[SIDE - x1, y0, SIDE - x0, y1] for x0, y0, x1, y1 in boxes]
    objs = [obj("circle", "red", "small", 0, boxes[0]), obj("star", "blue", "large", 1, boxes[1])]
    return SceneImages(image, inst, [objs], META)


def item(data: AttributeImages, monkeypatch, draw: float):
    monkeypatch.setattr(np.random, "random", lambda: draw)
    return data[0]


def test_flip_mirrors_image_dense_targets_and_box_centres(monkeypatch):
    space = AttributeSpace.from_meta(META)
    data = AttributeImages(asymmetric_scene(mirror=False), space, stride=4, augment=True)
    reference = AttributeImages(asymmetric_scene(mirror=True), space, stride=4, augment=False)

    image, dense, boxes, presence = item(data, monkeypatch, 0.9)  # >= 0.5: no flip
    assert torch.equal(dense, data.dense[0]) and torch.equal(boxes, data.boxes[0])
    # the circle owns row 0, columns 0-1; its box cx = 4 / 16
    assert dense[:, 0, :2].tolist() == [[1, 1]] * 4
    assert boxes[:, 0, 0].tolist() == pytest.approx([0.25, 0.125, 0.5, 0.25])
    assert dense[0, 2:, 2].tolist() == [2, 2]  # the star: rows 2-3 of column 2

    image_f, dense_f, boxes_f, presence_f = item(data, monkeypatch, 0.1)  # < 0.5: flipped
    assert torch.equal(image_f, images_to_tensor(reference.images[0]))
    assert torch.equal(dense_f, reference.dense[0])
    assert boxes_f == pytest.approx(reference.boxes[0])
    assert torch.equal(presence_f, presence)
    # by hand: the circle now owns columns 2-3 with cx = 1 - 0.25; the star column 1 with cx = 1 - 0.6875
    assert dense_f[:, 0, 2:].tolist() == [[1, 1]] * 4 and dense_f[:, 0, :2].tolist() == [[0, 0]] * 4
    assert boxes_f[:, 0, 3].tolist() == pytest.approx([0.75, 0.125, 0.5, 0.25])
    assert dense_f[0, 2:, 1].tolist() == [2, 2]
    assert boxes_f[0, 2:, 1].tolist() == pytest.approx([1 - 11 / 16] * 2)
    # background cells keep their all-zero box (the mirrored centre applies on objects only)
    assert boxes_f[:, 3, 0].tolist() == [0, 0, 0, 0]
    # the flip returns a copy: the stored targets are untouched
    assert torch.equal(data.dense[0], dense) and torch.equal(data.boxes[0], boxes)


def test_flip_keeps_ignored_cells_ignored(monkeypatch):
    # a star over x 11-14 covers 1 of column 2's 4 px (< 0.4 object, < 0.9 background: IGNORE on every group)
    # and 2 of column 3's (labelled)
    scene = asymmetric_scene(mirror=False)
    scene.instances[0, 8:16, 10:12] = 0
    scene.instances[0, 8:16, 11:14] = 2
    data = AttributeImages(scene, AttributeSpace.from_meta(META), stride=4, augment=True)
    _, dense, _, _ = item(data, monkeypatch, 0.9)
    _, dense_f, _, _ = item(data, monkeypatch, 0.1)
    assert (dense[:, 2:, 2] == IGNORE).all() and (dense[:, 2:, 3] == torch.tensor([2, 2, 1, 2])[:, None]).all()
    assert torch.equal(dense_f, dense.flip(-1))
    assert (dense_f[:, 2:, 1] == IGNORE).all() and (dense_f[:, 2:, 0] == torch.tensor([2, 2, 1, 2])[:, None]).all()


# --- evaluate_zero_shot --------------------------------------------------------------------------------
# A stub dual encoder: an image's embedding is the one-hot of its pixel value at (0, 0, red); a prompt
# "a picture of a(n) {name}." embeds as the one-hot of the name's index in NAMES. So every image "looks like" one name.

NAMES = {"alpha": 0, "beta": 1, "gamma": 2}


class StubDualEncoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.image_proj = nn.Linear(1, 1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        index = (images[:, 0, 0, 0] * 255).round().long()
        return nn.functional.one_hot(index, len(NAMES)).float()

    def encode_prompts(self, prompts) -> torch.Tensor:
        names = [p.removeprefix("a picture of ").split(" ", 1)[1].removesuffix(".") for p in prompts]
        assert [contrastive.prompt(n) for n in names] == list(prompts)
        return nn.functional.one_hot(torch.tensor([NAMES[n] for n in names]), len(NAMES)).float()


def images_looking_like(indices: list[int]) -> np.ndarray:
    out = np.zeros((len(indices), 4, 4, 3), np.uint8)
    out[:, 0, 0, 0] = indices
    return out


def record(image: int, labels=()) -> Record:
    boxes = ((0.0, 0.0, 4.0, 4.0),) * len(labels)  # one box per label, as a Record requires
    return Record(image_id=str(image), image=image, width=4, height=4, boxes=boxes, labels=tuple(labels))


def test_zero_shot_prompts_are_sentences_of_the_world_caption_grammar():
    # the training captions are all of that grammar; a bare "a dotted pink crescent." is not
    assert contrastive.prompt("dotted pink crescent") == "a picture of a dotted pink crescent."
    assert contrastive.prompt("oval") == "a picture of an oval."
    for name in ("dotted pink crescent", "plain orange oval", "arrow"):
        assert is_world_caption(contrastive.prompt(name))
    assert not is_world_caption("a dotted pink crescent.")


def test_zero_shot_hand_made_answers():
    # cub: images look like species [2, 0, 1, 1]; the records visit them out of order, labels[0] the species
    cub = Split(
        [record(1, (0, 2)), record(0, (2, 0)), record(3, (1, 1)), record(2, (0, 1))],
        images=images_looking_like([2, 0, 1, 1]),
        meta={"species": [{"name": n} for n in NAMES]},
    )
    # det: image k looks like category [2, 0, 1, 0][k]; image 2 has no record; image 0 has two records
    det = Split(
        [record(3), record(0), record(1), record(0)],
        images=images_looking_like([2, 0, 1, 0]),
        meta={
            "categories": [{"name": n} for n in NAMES],
            "scenes": [
                [{"category_id": 0}, {"category_id": 2}],  # best 2: present
                [{"category_id": 1}],  # best 0: absent
                [{"category_id": 1}],  # (no record: not evaluated, though it would be a hit)
                [{"category_id": 0}],  # best 0: present
            ],
        },
    )
    model = StubDualEncoder()
    result = contrastive.evaluate_zero_shot(model, cub, det)
    # predictions for the records' images 1, 0, 3, 2: species 0, 2, 1, 1 vs labels[0] 0, 2, 1, 0
    assert result["cub_acc"] == pytest.approx(3 / 4)
    # evaluated images 0, 1, 3 (each once): present, absent, present
    assert result["det_top1"] == pytest.approx(2 / 3)
    assert model.training  # the mode comes back after the evaluation


# --- load_hf_text_encoder ------------------------------------------------------------------------------

TEXTS = ["a red circle on the left", "the blue star near the square", "two small green triangles", "a plain dot"]


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    from transformers import BertConfig, BertModel

    tokenizer = train_wordpiece(TEXTS * 4, vocab_size=80)
    cfg = BertConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=32,
    )  # fmt: skip
    torch.manual_seed(0)
    model = BertModel(cfg).eval()
    path = tmp_path_factory.mktemp("tiny_bert")
    model.save_pretrained(path)
    tokenizer.save(str(path / "tokenizer.json"))
    return path, model


def test_load_hf_text_encoder_reproduces_the_saved_bert(tiny_bert_dir):
    path, saved = tiny_bert_dir
    enc = load_hf_text_encoder(path, max_len=16, pooling="mean").eval()
    assert enc.config.hidden_size == 16 and enc.config.num_layers == 2 and enc.config.max_len == 16
    assert enc.config.pooling == "mean" and enc.mlm_head is None
    batch = enc.tokenize(TEXTS[:2])
    # the tokenizer came along: [CLS] ... [SEP] (ids 2, 3), padded with [PAD] = 0
    assert batch["input_ids"][:, 0].tolist() == [2, 2] and 3 in batch["input_ids"][0].tolist()
    with torch.no_grad():
        expected = saved(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        got = enc(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(got, expected, atol=1e-5)
    # a freshly initialised encoder of the same config does not match: the equality comes from the loaded weights
    torch.manual_seed(1)
    with torch.no_grad():
        fresh = TextEncoder(enc.config).eval()(batch["input_ids"], batch["attention_mask"])
    assert not torch.allclose(fresh, expected, atol=1e-3)


def test_load_hf_text_encoder_missing_folder_names_it(tmp_path):
    missing = tmp_path / "no_such_bert"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_hf_text_encoder(missing)


def test_a_missing_weights_path_names_its_params_key(tmp_path):
    from vlrepro.pretrain.config import PretrainParams
    from vlrepro.pretrain.run import build_backbone, pretrain_text

    missing = str(tmp_path / "nope.pth")
    p = PretrainParams.model_validate({"cnn": {"weights": missing}, "vit": {"weights": missing},
                                       "text": {"source": "hf", "hf_path": str(tmp_path / "bert")}})  # fmt: skip
    for kind in ("cnn", "vit"):
        with pytest.raises(FileNotFoundError, match=rf"^pretrain\.{kind}\.weights: .*nope\.pth"):
            build_backbone(kind, p, 64)
    with pytest.raises(FileNotFoundError, match=r"^pretrain\.text\.hf_path: .*bert"):
        pretrain_text(p, tmp_path, tmp_path / "out")


def test_load_hf_text_encoder_without_tokenizer_is_an_error(tiny_bert_dir, tmp_path):
    path, _ = tiny_bert_dir
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_hf_text_encoder(tmp_path)


def test_text_config_from_bert_round_trip_and_relu_refused():
    cfg = TextConfig(vocab_size=77, hidden_size=24, num_layers=3, num_heads=3, intermediate_size=48, max_position=20)
    back = text_config_from_bert(cfg.bert_config(), max_len=cfg.max_len)
    assert back == cfg
    relu = cfg.bert_config()
    relu.hidden_act = "relu"
    with pytest.raises(ValueError, match="gelu"):
        text_config_from_bert(relu)


# --- lenient retrieval ---------------------------------------------------------------------------------


def test_lenient_retrieval_also_counts_captions_true_of_the_query_image(monkeypatch):
    from vlrepro.data.world.captions import caption_truth_matrix
    from vlrepro.data.world.config import WorldConfig
    from vlrepro.data.world.suite import build_split

    cfg = WorldConfig()
    split = build_split(cfg.model_copy(update={"captions": cfg.captions.model_copy(update={"test": 30})}),
                        "captions", "test")  # fmt: skip
    records = [r for r in split.records if r.text]
    images = sorted({int(r.image) for r in records})
    true = caption_truth_matrix(split, [r.text for r in records], images)
    # image i: one that other images' captions describe too (world captions are often generic)
    owner = np.array([images.index(int(r.image)) for r in records])
    i = int(np.argmax([(true[k] & (owner != k)).sum() for k in range(len(images))]))
    assert (true[i] & (owner != i)).any()
    # every caption retrieves image i; every image retrieves caption 0 (its similarities all tie, at 1 for
    # image i and 0 for the others, and argmax takes the first)
    image_emb = torch.eye(len(images))
    text_emb = torch.zeros(len(records), len(images))
    text_emb[:, i] = 1.0
    monkeypatch.setattr(contrastive, "_embed_images", lambda model, x: image_emb)
    monkeypatch.setattr(contrastive, "_embed_texts", lambda model, x: text_emb)
    r = contrastive.evaluate_retrieval(nn.Linear(1, 1), split)
    assert r["t2i_r1"] == pytest.approx((owner == i).mean())  # strict: only image i's own captions
    assert r["lenient_t2i_r1"] == pytest.approx(true[i].mean())  # lenient: every caption true of image i
    assert r["lenient_t2i_r1"] > r["t2i_r1"]
    assert r["i2t_r1"] == pytest.approx((owner[0] == np.arange(len(images))).mean())
    assert r["lenient_i2t_r1"] == pytest.approx((true[:, 0] | (owner[0] == np.arange(len(images)))).mean())
    assert r["lenient_r1"] == pytest.approx((r["lenient_i2t_r1"] + r["lenient_t2i_r1"]) / 2)


def test_attribute_swap_changes_one_word_of_one_kind_and_keeps_the_article_right():
    from vlrepro.data.world.vocab import WORDS

    rng = np.random.default_rng(0)
    assert contrastive.attribute_swap("grass on a plain background.", np.random.default_rng(0)) is not None
    assert contrastive.attribute_swap("many things here", rng) is None  # nothing to swap
    for text in ("a red oval on grass.", "two striped hearts and a big cross.", "an orange ring"):
        for _ in range(20):
            swapped = contrastive.attribute_swap(text, rng)
            diff = [(a, b) for a, b in zip(text.split(), swapped.split(), strict=True) if a != b]
            content = [(a, b) for a, b in diff if a not in ("a", "an")]
            assert len(content) == 1, (text, swapped)
            ((old, new),) = content
            assert WORDS[old.rstrip(".,")][0] == WORDS[new.rstrip(".,")][0]  # colour for colour, ...
            words = swapped.split()
            for i, w in enumerate(words[:-1]):
                if w in ("a", "an"):
                    assert w == ("an" if words[i + 1][0] in "aeiou" else "a"), swapped


def test_clip_loss_with_hard_negatives_by_hand():
    class Fixed(nn.Module):  # image i and text i are unit vectors; a swapped caption is given its own vector
        def forward(self, images, ids, mask):
            return images, ids.float(), torch.tensor(2.0)

        def encode_text(self, ids, mask):
            return ids.float()

    e = torch.eye(2)
    negative = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    batch = {"images": e, "input_ids": e, "attention_mask": e, "image_ids": torch.tensor([0, 1]),
             "negative_ids": negative, "negative_mask": e, "has_negative": torch.tensor([True, False])}  # fmt: skip
    got = contrastive.clip_loss(Fixed(), batch)["loss"]
    # image 0: logits [2, 0] + its negative 2*0.6; image 1: [0, 2] (no negative); text->image: [2, 0], [0, 2]
    i2t = (-math.log(math.exp(2) / (math.exp(2) + 1 + math.exp(1.2))) - math.log(math.exp(2) / (math.exp(2) + 1))) / 2
    t2i = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert got.item() == pytest.approx((i2t + t2i) / 2, rel=1e-6)
    plain = {k: batch[k] for k in ("images", "input_ids", "attention_mask", "image_ids")}
    assert contrastive.clip_loss(Fixed(), plain)["loss"].item() == pytest.approx(t2i, rel=1e-6)
    # the same image twice: the other row's caption is no negative, the swapped caption still is
    same = contrastive.clip_loss(Fixed(), batch | {"image_ids": torch.tensor([0, 0])})["loss"]
    assert same.item() == pytest.approx(-math.log(math.exp(2) / (math.exp(2) + math.exp(1.2))) / 4, rel=1e-6)
