"""BLIP on tiny models: the three attention masks, what each sharing setting ties, ITM negatives, the LM loss,
decoding, the captioning scores against hand computations, CapFilt's bookkeeping, and a MED that learns."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vlrepro.blip.__main__ import claims, gates
from vlrepro.blip.capfilt import filter_scores
from vlrepro.blip.config import BLIPParams
from vlrepro.blip.data import TrainingImages, bootstrap_pairs, training_images
from vlrepro.blip.generate import beam_search, nucleus
from vlrepro.blip.model import (
    BLIP,
    MEDConfig,
    _negatives,
    bidirectional_mask,
    blip_losses,
    causal_mask,
    count_parameters,
    lm_loss,
)  # fmt: skip
from vlrepro.blip.run import build_model, decode_texts, most_frequent
from vlrepro.config import ConfigError
from vlrepro.data.real.errors import DatasetError
from vlrepro.data.records import Record, Split
from vlrepro.metrics.captioning import caption_scores, tokenize
from vlrepro.models.backbones import ViTConfig
from vlrepro.models.clip import CLIPConfig, DualEncoder
from vlrepro.models.text import TextConfig, train_wordpiece
from vlrepro.report.gate_rows import GateError, check_gates

TEXT = TextConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_position=24,
                  max_len=16, pooling="mean", mlm_head=False)  # fmt: skip


def tiny_blip(sharing: str = "all_except_sa", seed: int = 0) -> BLIP:
    torch.manual_seed(seed)
    return BLIP(MEDConfig(text=TEXT, image_dim=32, embed_dim=16, sharing=sharing, queue_size=8)).eval()


def image(b: int = 2, n: int = 5) -> torch.Tensor:
    return torch.randn(b, n, 32)


# --- masks ----------------------------------------------------------------------------------------------------


def test_masks_on_a_small_case():
    pad = torch.tensor([[1, 1, 1, 0]])
    blocked = torch.finfo(torch.float32).min
    assert (bidirectional_mask(pad, torch.float32)[0, 0, 0] == torch.tensor([0, 0, 0, blocked])).all()
    causal = causal_mask(pad, torch.float32)[0, 0]
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 0]]).bool()
    assert ((causal == 0) == expected).all()


def test_decoder_is_causal_encoder_bidirectional_and_unimodal_blind_to_the_image():
    model, img = tiny_blip(), image(1)
    ids = torch.tensor([[2, 10, 11, 12, 3]])
    later = ids.clone()
    later[0, 3:] = torch.tensor([20, 21])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        dec, dec_later = model.med.decode(ids, mask, img), model.med.decode(later, mask, img)
        enc, enc_later = model.med.encode_multimodal(ids, mask, img), model.med.encode_multimodal(later, mask, img)
        assert torch.allclose(dec[0, :3], dec_later[0, :3], atol=1e-5)  # positions 0-2 do not see 3-4
        assert not torch.allclose(enc[0, :3], enc_later[0, :3], atol=1e-3)  # bidirectional: they do
        other_image = image(1)
        assert not torch.allclose(enc, model.med.encode_multimodal(ids, mask, other_image), atol=1e-3)
        text = model.med.encode_text(ids, mask)  # no cross-attention: no image argument at all
        assert torch.allclose(text, model.med.encode_text(ids, mask))


# --- sharing ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sharing", ["all", "all_except_ca", "all_except_sa", "none"])
def test_sharing_ties_parts_by_identity(sharing):
    med = tiny_blip(sharing).med
    for enc, dec in zip(med.encoder, med.decoder, strict=True):
        assert (dec.attention is enc.attention) == (sharing in ("all", "all_except_ca"))
        assert (dec.crossattention is enc.crossattention) == (sharing in ("all", "all_except_sa"))
        assert (dec.intermediate is enc.intermediate) == (sharing != "none")
        assert (dec.output is enc.output) == (sharing != "none")
    assert (med.dec_embeddings is med.embeddings) == (sharing != "none")
    assert med.lm_head.decoder.weight is med.dec_embeddings.word_embeddings.weight


def test_parameter_counts_of_the_sharing_settings():
    counts = {s: count_parameters(tiny_blip(s).med) for s in ("all", "all_except_ca", "all_except_sa", "none")}
    med = tiny_blip("none").med
    sa = sum(count_parameters(layer.attention) for layer in med.decoder)
    ca = sum(count_parameters(layer.crossattention) for layer in med.decoder)
    ffn = sum(count_parameters(layer.intermediate) + count_parameters(layer.output) for layer in med.decoder)
    emb = count_parameters(med.dec_embeddings)
    assert counts["all_except_sa"] - counts["all"] == sa
    assert counts["all_except_ca"] - counts["all"] == ca
    assert counts["none"] - counts["all"] == sa + ca + ffn + emb
    # every counted parameter takes part in a forward pass (the LM head has one output bias, not two)
    assert med.lm_head.decoder.bias is med.lm_head.bias
    # a shared copy is counted once, however often it is referenced
    distinct = {id(p): p.numel() for m in med.modules() for p in m.parameters(recurse=False)}
    assert count_parameters(med) == sum(distinct.values())


def test_load_bert_fills_encoder_and_decoder_and_leaves_cross_attention_new():
    torch.manual_seed(0)
    clip = DualEncoder(CLIPConfig(vision=ViTConfig(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2),
                                  text=TEXT, embed_dim=16))  # fmt: skip
    p = BLIPParams(model={"sharing": "none", "queue_size": 8})
    model = build_model(p, clip)
    bert = clip.text.bert.encoder.layer[1]
    for stack in (model.med.encoder, model.med.decoder):
        assert torch.equal(stack[1].attention.self.query.weight, bert.attention.self.query.weight)
        assert torch.equal(stack[1].output.dense.weight, bert.output.dense.weight)
    words = clip.text.bert.embeddings.word_embeddings.weight
    new = model.med.embeddings.word_embeddings.weight
    assert torch.equal(new[: len(words)], words) and torch.equal(new[model.config.enc_id], words[2])  # [ENC] := [CLS]
    assert torch.equal(model.text_proj.weight, clip.text_proj.weight)
    # the momentum copies start equal to the online model
    assert torch.equal(model.momentum["text_proj"].weight, model.text_proj.weight)


# --- losses ---------------------------------------------------------------------------------------------------------


def test_lm_loss_with_label_smoothing_by_hand():
    logits = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 3.0, 0.0], [1.0, 1.0, 1.0]]])
    ids = torch.tensor([[0, 2, 1]])  # predict 2 from position 0, then 1 from position 1
    mask = torch.tensor([[1, 1, 1]])
    eps = 0.1

    def smoothed(row, target):
        logp = [v - math.log(sum(math.exp(x) for x in row)) for v in row]
        return -(1 - eps) * logp[target] - eps * sum(logp) / len(row)

    expected = (smoothed([2.0, 0.0, 1.0], 2) + smoothed([0.0, 3.0, 0.0], 1)) / 2
    assert lm_loss(logits, ids, mask, eps).item() == pytest.approx(expected, rel=1e-5)
    # padding is not predicted
    short = lm_loss(logits, ids, torch.tensor([[1, 1, 0]]), eps).item()
    assert short == pytest.approx(smoothed([2.0, 0.0, 1.0], 2), rel=1e-5)


@pytest.mark.parametrize("hard", [True, False])
def test_itm_negatives_never_the_positive_nor_a_same_caption_pair(hard):
    torch.manual_seed(0)
    b = 6
    image_ids = torch.tensor([0, 0, 1, 2, 3, 4])
    ids = torch.tensor([[2, 5, 3], [2, 6, 3], [2, 7, 3], [2, 5, 3], [2, 8, 3], [2, 9, 3]])  # rows 0 and 3: one caption
    same = (image_ids[:, None] == image_ids[None, :]) | (ids[:, None] == ids[None, :]).all(-1)
    sim = torch.randn(b, b) * 5
    sim.fill_diagonal_(10.0)  # the positive is the most similar: hard sampling would love it
    for _ in range(200):
        picked = _negatives(sim, same, hard)
        assert not same[torch.arange(b), picked].any()


def test_negatives_fall_back_to_other_columns_never_the_positive():
    torch.manual_seed(0)
    everything = torch.ones(4, 4, dtype=torch.bool)  # no row has an allowed negative
    for _ in range(50):
        assert (_negatives(torch.zeros(4, 4), everything, hard=False) != torch.arange(4)).all()


def test_world_matches_are_read_as_images_by_texts(monkeypatch):
    """``matches[i, j]``: text j is true of image i. Image 0's negative text must not be text 1, and text 1's
    negative image must not be image 0; text 0 may still get image 1 (text 0 is not true of image 1)."""
    import vlrepro.blip.model as med

    seen = []
    original = med._negatives
    monkeypatch.setattr(med, "_negatives", lambda sim, forbidden, hard: seen.append(forbidden) or original(
        sim, forbidden, hard))  # fmt: skip
    model = tiny_blip().train()
    matches = torch.tensor([[True, True, False], [False, True, False], [False, False, True]])
    batch = {"input_ids": torch.tensor([[2, 10, 3], [2, 11, 3], [2, 12, 3]]), "attention_mask": torch.ones(3, 3).long(),
             "image_ids": torch.tensor([0, 1, 2]), "image_tokens": image(3), "image_pooled": torch.randn(3, 32),
             "matches": matches}  # fmt: skip
    blip_losses(model, batch, alpha=0.4, hard_negatives=False)
    per_text, per_image = seen
    assert per_image[0, 1] and not per_image[1, 0]  # image 0 never gets text 1
    assert per_text[1, 0] and not per_text[0, 1]  # text 1 never gets image 0


def test_balanced_itm_weights_the_positive_twice_by_hand(monkeypatch):
    """Per pair one positive and two negatives; balanced, the loss is (2 Σ pos + Σ neg) / (2b + 2b)."""
    model = tiny_blip().train()
    b = 3
    logits = torch.tensor([[0.0, 2.0], [1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [2.0, 0.0], [0.0, 0.0],
                           [1.0, 3.0], [0.0, -1.0], [0.2, 0.1]])  # fmt: skip
    monkeypatch.setattr(model, "itm_logits", lambda ids, mask, tokens: logits)
    ids = torch.tensor([[2, 10, 3], [2, 11, 3], [2, 12, 3]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "image_ids": torch.tensor([0, 1, 2]),
             "image_tokens": image(3), "image_pooled": torch.randn(3, 32)}  # fmt: skip
    labels = [1] * b + [0] * 2 * b
    nll = [math.log(1 + math.exp(row[1 - y] - row[y])) for row, y in zip(logits.tolist(), labels, strict=True)]
    plain = blip_losses(model, batch, alpha=0.0, hard_negatives=False, weights=(0, 1, 0))["itm"]
    balanced = blip_losses(model, batch, alpha=0.0, hard_negatives=False, weights=(0, 1, 0), balanced_itm=True)["itm"]
    assert plain.item() == pytest.approx(sum(nll) / (3 * b), rel=1e-6)
    assert balanced.item() == pytest.approx((2 * sum(nll[:b]) + sum(nll[b:])) / (4 * b), rel=1e-6)


def test_blip_losses_mask_same_image_keys_in_itc_and_fill_the_queue():
    model = tiny_blip().train()
    batch = {"input_ids": torch.tensor([[2, 10, 11, 3], [2, 12, 13, 3], [2, 14, 3, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]]),
             "image_ids": torch.tensor([7, 7, 9]), "image_tokens": image(3), "image_pooled": torch.randn(3, 32)}
    out = blip_losses(model, batch, alpha=0.4)
    assert set(out) == {"loss", "itc", "itm", "lm"} and torch.isfinite(out["loss"])
    assert model.id_queue[:3].tolist() == [7, 7, 9] and int(model.queue_ptr) == 3
    out["loss"].backward()
    assert model.itm_head.weight.grad is not None and model.momentum["text_proj"].weight.grad is None


def test_a_tiny_med_learns_to_caption_two_images():
    torch.manual_seed(0)
    model = tiny_blip().train()
    img = image(2)
    ids = torch.tensor([[2, 10, 11, 12, 13, 3], [2, 20, 21, 22, 23, 3]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "image_ids": torch.tensor([0, 1]),
             "image_tokens": img, "image_pooled": img[:, 0]}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        loss = blip_losses(model, batch, alpha=0.0, weights=(0, 0, 1))["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    special = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    model.eval()
    assert beam_search(model, img, special, beams=3, min_len=4, max_len=8) == [[10, 11, 12, 13], [20, 21, 22, 23]]


# --- decoding -------------------------------------------------------------------------------------------------------


def test_decoding_respects_lengths_and_never_emits_special_tokens():
    model, img = tiny_blip(), image(3)
    special = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    banned = {0, 1, 2, 3, 4, model.config.enc_id, model.config.dec_id}
    g = torch.Generator().manual_seed(0)
    for rows in (beam_search(model, img, special, beams=3, min_len=3, max_len=6),
                 nucleus(model, img, special, top_p=0.9, min_len=3, max_len=6, generator=g)):
        assert len(rows) == 3
        for r in rows:
            assert 3 <= len(r) <= 6 and not banned & set(r)


def test_nucleus_with_a_tiny_top_p_is_greedy_and_beam_one_is_greedy():
    model, img = tiny_blip(), image(2)
    special = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    greedy = nucleus(model, img, special, top_p=1e-6, min_len=2, max_len=5)
    assert beam_search(model, img, special, beams=1, min_len=2, max_len=5) == greedy


# --- captioning scores ----------------------------------------------------------------------------------------------


def test_bleu4_by_hand_and_cider_of_exact_and_disjoint_captions():
    assert tokenize("A Plain, grey background.") == "a plain grey background"
    # candidate 4 words, reference 5: every n-gram precision 1, brevity penalty exp(1 - 5/4)
    got = caption_scores({"0": ["a b c d e"]}, {"0": "a b c d"})
    assert got["bleu4"] == pytest.approx(math.exp(1 - 5 / 4), rel=1e-3)
    # two images with disjoint references: an exact copy scores CIDEr-D 10, a caption sharing no word 0
    refs = {"0": ["red circle on grey"], "1": ["two blue stars here"]}
    exact = caption_scores(refs, {"0": "red circle on grey", "1": "two blue stars here"})
    assert exact["cider"] == pytest.approx(10.0, rel=1e-6)
    assert caption_scores(refs, {"0": "two blue stars here", "1": "red circle on grey"})["cider"] == 0.0
    with pytest.raises(ValueError, match="same non-empty image keys"):
        caption_scores(refs, {"0": "x"})


def test_most_frequent_breaks_ties_alphabetically():
    assert most_frequent(["b", "a", "b", "a", "c"]) == "a"


# --- CapFilt bookkeeping --------------------------------------------------------------------------------------------


def test_filter_scores_by_hand():
    keep = [True, False, False, True, True]
    noisy = [False, True, False, True, False]
    got = filter_scores(keep, noisy)
    # removed: items 1, 2; noisy among them: item 1 -> precision 1/2; noisy: items 1, 3 -> recall 1/2
    assert got == {"precision": 0.5, "recall": 0.5, "kept": 0.6, "noise_kept": pytest.approx(1 / 3)}
    assert filter_scores([True, True], [False, True]) == {"kept": 1.0, "recall": 0.0, "noise_kept": 0.5}


def _tiny_training_images() -> TrainingImages:
    """World-like splits (image arrays): two human images, three web images whose records are out of order."""
    pixels = np.zeros((3, 8, 8, 3), np.uint8)
    human = Split([Record(image_id=f"c/{i}", image=i, width=8, height=8, text=f"caption {i}") for i in range(2)],
                  pixels[:2], None, {})  # fmt: skip
    web = Split([Record(image_id=f"w/{i}", image=i, width=8, height=8, text=f"web {i}", meta={"noisy": i == 1})
                 for i in (2, 0, 1)], pixels, None, {})  # fmt: skip
    return TrainingImages(human=human, web=web, n_human=2, n_web=3)


def test_bootstrap_pairs_of_each_capfilt_variant():
    data = _tiny_training_images()
    capfilt = {
        "keep_web": {"decoupled": [True, False, True], "shared": [False, False, True]},
        "synthetic": {"decoupled_nucleus": ["n0", "n1", "n2"], "decoupled_beam": ["b0", "b1", "b2"],
                      "shared_nucleus": ["s0", "s1", "s2"]},
        "keep_synthetic": {"decoupled_nucleus": [True, True, False], "decoupled_beam": [False, True, True],
                           "shared_nucleus": [True, False, False]},
    }  # fmt: skip
    base = BLIPParams()

    def texts(**bootstrap):
        p = base.model_copy(update={"bootstrap": base.bootstrap.model_copy(update=bootstrap)})
        return bootstrap_pairs(p, data, capfilt).texts

    # web texts and their keep flags go in record order (images 2, 0, 1); synthetic ones by image number
    human = ["caption 0", "caption 1"]
    assert texts() == [*human, "web 2", "web 0", "web 1"]
    assert texts(filter=True) == [*human, "web 2", "web 1"]
    assert texts(captioner="nucleus") == [*human, "web 2", "web 0", "web 1", "n0", "n1", "n2"]
    assert texts(filter=True, captioner="nucleus") == [*human, "web 2", "web 1", "n0", "n1"]
    assert texts(filter=True, captioner="beam") == [*human, "web 2", "web 1", "b1", "b2"]
    assert texts(filter=True, captioner="nucleus", shared=True) == [*human, "web 1", "s0"]
    pairs = bootstrap_pairs(base.model_copy(update={"bootstrap": base.bootstrap.model_copy(update={"filter": True})}),
                            data, capfilt)  # fmt: skip
    assert pairs.image == [0, 1, 4, 3]  # web rows follow the human images: web image k is row 2 + k
    with pytest.raises(ValueError, match="blip_capfilt"):
        bootstrap_pairs(base.model_copy(update={"bootstrap": base.bootstrap.model_copy(update={"filter": True})}),
                        data, None)  # fmt: skip


# --- params, claims, gates ------------------------------------------------------------------------------------------


def test_variants_of_params_yaml_validate_and_an_unconverted_real_source_stops_with_a_message(tmp_path):
    from vlrepro.config import load_params

    p = load_params(Path(__file__).parents[1] / "params.yaml", sections=["blip"]).blip
    for name in p.variants:
        p.variant(name)
    assert p.variant("share_none").model.sharing == "none"
    assert p.variant("capfilt_beam").bootstrap.captioner == "beam"
    with pytest.raises(ConfigError, match="no variant"):
        p.variant("nope")
    with pytest.raises(DatasetError, match=r"coco_karpathy/train: missing.*data\.real\.coco_karpathy"):
        training_images(p.model_copy(update={"source": "real"}), tmp_path)


def test_claims_and_gates_rows_are_well_formed():
    variants = ["share_all", "share_all_but_ca", "share_all_but_sa", "share_none", "filter", "captioner", "capfilt",
                "capfilt_beam", "capfilt_shared"]  # fmt: skip
    rows = claims(variants)
    assert len(rows) == 9 * 3 and {r["paper"] for r in rows} == {"BLIP"}
    assert claims(["share_all_but_sa"]) == []  # nothing to compare with
    test = {k: 0.5 for k in ("itm_acc", "itm_chance", "tr1", "tr1_chance", "ir1", "ir1_chance", "cider",
                             "cider_frequent")}
    for v in variants:  # every gate names a metric the run writes
        check_gates(gates(v), f"{v}-0.json", v, {"captions": {"test": test}})
    with pytest.raises(GateError):
        check_gates(gates("capfilt"), "capfilt-0.json", "capfilt", {"captions": {"test": {"tr1": 0.5}}})


def test_generated_ids_decode_to_the_caption():
    tok = train_wordpiece(["a red circle and two blue stars."], vocab_size=64)
    ids = tok.encode("a red circle").ids[1:-1]  # what decoding returns: no [CLS] / [SEP]
    assert decode_texts(tok, [ids]) == ["a red circle"]


def test_retrieval_reranks_itc_top_k_by_itm_and_counts_any_caption_of_the_image():
    from types import SimpleNamespace

    from vlrepro.blip.data import ImageBank
    from vlrepro.blip.run import CaptionSet, retrieval

    words = ["alpha", "bravo", "charlie", "delta"]  # texts 0, 1 describe image 0; 2, 3 image 1
    tok = train_wordpiece(words, vocab_size=64)
    text_of = {tok.token_to_id(w): i for i, w in enumerate(words)}
    owner = [0, 0, 1, 1]
    # ITC prefers the wrong image for every text and the wrong texts for every image
    image_feat = torch.eye(2)
    text_feat = torch.tensor([[0.1, 0.9], [0.2, 0.8], [0.9, 0.1], [0.8, 0.2]])

    class Stub:
        config = SimpleNamespace(text=SimpleNamespace(max_len=8))

        def image_feature(self, pooled):
            return image_feat[pooled[:, 0].long()]

        def text_feature(self, ids, mask):
            return text_feat[[text_of[int(i)] for i in ids[:, 1]]]

        def itm_logits(self, ids, mask, tokens):  # a match logit of 10 for a true pair, 0 otherwise
            true = [owner[text_of[int(i)]] == int(t[0, 0]) for i, t in zip(ids[:, 1], tokens, strict=True)]
            return torch.tensor([[0.0, 10.0 * t] for t in true])

    bank = ImageBank(torch.arange(2.0)[:, None, None].expand(2, 3, 4), torch.arange(2.0)[:, None].expand(2, 4))
    data = CaptionSet(SimpleNamespace(), bank, words, owner)
    got = retrieval(Stub(), tok, data, k=3, batch=8)  # each image's top 3 by ITC holds one of its captions
    assert got["itc_tr1"] == 0.0 and got["itc_ir1"] == 0.0  # ITC alone is always wrong
    assert got["tr1"] == 1.0 and got["ir1"] == 1.0  # ITM re-ranking fixes every query
    assert got["tr10"] == got["ir10"] == 1.0
    only_top1 = retrieval(Stub(), tok, data, k=1, batch=8)  # re-ranking one candidate cannot fix anything
    assert only_top1["tr1"] == 0.0 and only_top1["tr5"] == 1.0
