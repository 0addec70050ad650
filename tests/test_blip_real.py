"""BLIP on real data (blip.source: real, the paper profile), end to end on a fixture the test writes: JPEG files,
Karpathy's dataset_coco.json and a web caption file in BLIP's annotation format, converted by the `data`
stage's function; then the baseline run, CapFilt and a CapFilt variant through their command with a tiny model,
and the stage's notebook over those runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from paper_project import paper_project
from PIL import Image

from vlrepro.blip.data import open_split, training_images, web_images, web_records
from vlrepro.blip.run import CaptionSet, itm_negatives
from vlrepro.data.images import Letterbox
from vlrepro.data.real.errors import DatasetError
from vlrepro.models import load_pretrained, save_pretrained
from vlrepro.models.backbones import ViTConfig
from vlrepro.models.clip import CLIPConfig, DualEncoder
from vlrepro.models.text import TextConfig, train_wordpiece
from vlrepro.stage import run_notebook

ROOT = Path(__file__).resolve().parents[1]
SIZE = 32
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30), "yellow": (230, 220, 30)}


def _image(path: Path, colour: str, size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, COLOURS[colour]).save(path, quality=90)


def write_fixture(root: Path) -> dict[str, str]:
    """COCO images with two captions each in Karpathy's splits, and four web images with one alt-text each."""
    images, colours = [], list(COLOURS)
    splits = ["train"] * 4 + ["restval"] * 2 + ["val"] * 2 + ["test"] * 3
    for k, split in enumerate(splits):
        colour = colours[k % 4]
        folder = "train2014" if split == "train" else "val2014"
        name = f"COCO_{folder}_{k:012d}.jpg"
        _image(root / "coco" / folder / name, colour, (48 + 8 * k, 40))  # landscape, widths differ
        sents = [{"raw": f"a {colour} square", "tokens": []}, {"raw": f"a plain {colour} picture", "tokens": []}]
        images.append({"filepath": folder, "filename": name, "imgid": k, "split": split, "cocoid": 100 + k,
                       "sentences": sents})  # fmt: skip
    (root / "dataset_coco.json").write_text(json.dumps({"dataset": "coco", "images": images}))
    web = [{"image": f"web/{k}.jpg", "caption": f"{'the' if k % 2 else 'a'} {colours[k]} photo"} for k in range(4)]
    web[1]["caption"] = [web[1]["caption"], "a blue thing"]  # an image with two alt-texts
    for k in range(4):
        _image(root / "web_images" / "web" / f"{k}.jpg", colours[k], (30, 60))  # portrait
    (root / "web.json").write_text(json.dumps(web))
    return {"coco_karpathy": str(root / "dataset_coco.json"), "coco_images": str(root / "coco"),
            "web_captions": str(root / "web.json"), "web_images": str(root / "web_images")}  # fmt: skip


TINY = {  # the paper profile's recipe, shrunk as profiles.smoke shrinks the default one
    "model": {"queue_size": 8, "alpha_ramp_steps": 2},
    "train": {"steps": 2, "batch_size": 4, "warmup_steps": 0, "eval_every": 1},
    "capfilt": {"steps": 2, "batch_size": 2},  # not train's: the test sees which batch the fine-tunes use
    "eval": {"k": 2, "max_len": 5, "min_len": 2, "batch_size": 8, "curve_pairs": 4},
    "examples": 2,
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A scratch project: params.yaml (paper profile), data/real converted, a tiny CLIP checkpoint."""
    root = tmp_path_factory.mktemp("blip_real")
    paths = write_fixture(root / "datasets")
    P, _ = paper_project(root, "blip", paths, TINY)
    torch.manual_seed(0)
    texts = [f"{a} {c} {n}" for a in ("a", "the", "a plain") for c in COLOURS for n in ("square", "photo", "picture")]
    tok = train_wordpiece(texts * 3, vocab_size=80)
    text = TextConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, num_layers=2, num_heads=2,
                      intermediate_size=32, max_len=16)  # fmt: skip
    vision = ViTConfig(img_size=SIZE, patch_size=8, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0)
    save_pretrained(DualEncoder(CLIPConfig(vision=vision, text=text, embed_dim=8), tok),
                    root / "checkpoints" / "pretrain" / "clip")  # fmt: skip
    return root, P.blip


def test_real_splits_number_their_images_and_encode_the_letterboxed_files(project):
    root, p = project
    data_dir = root / "data" / "real"
    data = training_images(p, data_dir)
    assert (data.n_human, data.n_web) == (6, 4)  # Karpathy's train + restval (human_images: null = all)
    assert [i for i, _ in web_records(data)] == [0, 1, 1, 2, 3]  # five captions of four web images
    assert web_images(data) == [0, 1, 2, 3]  # one synthetic caption each
    limited = training_images(p.model_copy(update={"data": p.data.model_copy(update={"web_images": 2})}), data_dir)
    assert [i for i, _ in web_records(limited)] == [0, 1, 1] and limited.n_web == 2
    clip = load_pretrained(root / "checkpoints" / "pretrain" / "clip").eval()
    bank = data.encode(clip.visual)
    assert bank.tokens.shape[0] == 10 and bank.pooled.shape == (10, 16)
    # the fourth web image is yellow: its first row is the letterboxed file, encoded as the ViT sees it
    from vlrepro.blip.data import encode_images

    web = open_split(data_dir, "web", "train", "real")
    lb = Letterbox.fit(30, 60, SIZE)
    pixels = np.full((1, SIZE, SIZE, 3), (124, 116, 104), np.uint8)
    pixels[0, :, lb.pad_x : lb.pad_x + lb.new_width] = COLOURS["yellow"]
    expected = encode_images(clip.visual, pixels).pooled[0]
    assert web.records[4].text == "the yellow photo"
    # the yellow web image's row is the bank row nearest to the file as the ViT sees it (JPEG colours differ a bit)
    assert int((bank.pooled - expected).norm(dim=1).argmin()) == 6 + 3
    test = CaptionSet.load(data_dir, "test", clip.visual, "real")
    assert test.text_image == [0, 0, 1, 1, 2, 2] and len(test.bank) == 3
    images, texts, negatives = itm_negatives(test, 6)
    assert images == [0, 0, 1, 1, 2, 2]  # every caption finds a negative: a caption of another image
    assert all(not test.true_of(n, i) and test.true_of(t, i) for i, t, n in zip(images, texts, negatives,
                                                                               strict=True))  # fmt: skip


def test_an_image_bank_too_large_for_memory_stops_before_encoding(project, monkeypatch):
    import psutil

    from vlrepro.blip import data as blip_data

    root, p = project
    data = training_images(p, root / "data" / "real")
    clip = load_pretrained(root / "checkpoints" / "pretrain" / "clip").eval()
    bank = data.encode(clip.visual)
    assert blip_data.bank_bytes(clip.visual, 10) == 4 * (bank.tokens.numel() + bank.pooled.numel())
    # a machine with 1 kB available: refused with the keys that shrink it, and nothing is encoded
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(available=1000))
    monkeypatch.setattr(blip_data, "encode_split", lambda *a: pytest.fail("encoded despite the memory check"))
    with pytest.raises(MemoryError, match=r"10 images needs .* GB .*blip\.data\.human_images or blip\.data\.web_"):
        data.encode(clip.visual)


def test_unconverted_sets_name_the_key(project, tmp_path):
    _, p = project
    with pytest.raises(DatasetError, match=r"coco_karpathy/train: missing.*data\.real\.coco_karpathy"):
        training_images(p, tmp_path)
    root, _ = project
    (tmp_path / "coco_karpathy" / "train").mkdir(parents=True)
    src = root / "data" / "real" / "coco_karpathy" / "train" / "records.json"
    (tmp_path / "coco_karpathy" / "train" / "records.json").write_text(src.read_text())
    with pytest.raises(DatasetError, match=r"web_captions/train: missing.*data\.real\.web_captions"):
        training_images(p, tmp_path)


def test_run_capfilt_and_a_capfilt_variant_in_the_paper_profile(project, monkeypatch):
    root, _ = project
    from vlrepro.blip.__main__ import main

    monkeypatch.chdir(root)
    monkeypatch.delenv("VLREPRO_PARAMS", raising=False)
    assert main(["run", "--variant", "share_all_but_sa", "--seed", "0"]) == 0
    doc = json.loads((root / "reports" / "metrics" / "blip" / "share_all_but_sa-0.json").read_text())
    test = doc["metrics"]["captions"]["test"]
    assert test["ir1_chance"] == pytest.approx(1 / 3) and test["tr1_chance"] == pytest.approx(2 / 6)
    assert doc["metrics"]["train"]["pairs"] == 6 * 2 + 5  # the human captions and the raw web texts
    run = json.loads((root / "reports" / "runs" / "blip" / "share_all_but_sa-0" / "run.json").read_text())
    assert run["files"] == ["val2014/COCO_val2014_000000000008.jpg", "val2014/COCO_val2014_000000000009.jpg"]
    import vlrepro.blip.run as blip_run

    batches, fit = [], blip_run.fit

    def recording_fit(*args, **kwargs):
        batches.append(args[3].batch_size)  # the TrainConfig
        return fit(*args, **kwargs)

    monkeypatch.setattr(blip_run, "fit", recording_fit)
    assert main(["capfilt", "--seed", "0"]) == 0
    assert batches == [2, 2, 2]  # the captioner, the filter and the shared model, at capfilt.batch_size
    cf = json.loads((root / "reports" / "metrics" / "blip" / "bootstrap-0.json").read_text())["metrics"]
    # nobody knows which real web captions are wrong: the filter's share kept, no precision or recall
    assert set(cf["filter"]["decoupled"]) == {"kept"} and set(cf["synthetic"]["decoupled_beam"]) == {"distinct", "kept"}
    texts = json.loads((root / "reports" / "runs" / "blip" / "bootstrap-0" / "texts.json").read_text())
    assert len(texts["synthetic"]["decoupled_beam"]) == 4 and len(texts["web"]) == 5 and texts["noisy"] is None
    assert main(["run", "--variant", "capfilt", "--seed", "0"]) == 0
    capfilt = json.loads((root / "reports" / "metrics" / "blip" / "capfilt-0.json").read_text())["metrics"]
    assert capfilt["train"]["pairs"] == 12 + sum(texts["keep_web"]["decoupled"]) + sum(
        texts["keep_synthetic"]["decoupled_nucleus"])
    # the stage's notebook reads these runs and shows the example images from their files
    (root / "notebooks").mkdir(exist_ok=True)
    shutil.copy(ROOT / "notebooks" / "60_blip.ipynb", root / "notebooks")
    assert run_notebook("60_blip", root, root / "params.yaml").is_file()
    assert (root / "reports" / "figures" / "blip_captions.png").is_file()
