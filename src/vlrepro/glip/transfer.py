"""Few-shot transfer of a trained GLIP to a new domain: full fine-tuning versus prompt tuning.

The world's ``odinw`` set plays ODinW (with ``glip.source: real``, one ODinW dataset: ``vlrepro.glip.real``):
the 12 classes in a shifted domain (other textures, a darker palette), a few training images per class.
Both ways start from the same trained model and train on the first images that give every class at least
``k`` boxes, with the prompt of all the split's classes:

- ``fine_tuning``: what the run trained (the head, and the CNN when ``train.cnn_lr`` > 0, at the run's ratio of
  the two learning rates);
- ``prompt_tuning``: only a zero-initialised offset on the prompt's token features (``GLIP.prompt_tuning``).

The score is COCO AP on odinw/test with the same prompt; ``zero_shot`` is the model before either.
"""

from __future__ import annotations

import copy
from collections import Counter
from typing import Any

import torch

from vlrepro.data.records import Split
from vlrepro.glip.config import GLIPParams
from vlrepro.glip.data import GroundingSamples, category_names, split_pixels
from vlrepro.glip.evaluate import detection_ap
from vlrepro.glip.model import GLIP
from vlrepro.glip.prompts import join_classes
from vlrepro.models.backbones import images_to_tensor
from vlrepro.train import TrainConfig, fit, run_dir

MODES = ("fine_tuning", "prompt_tuning")


def k_shot_images(split: Split, k: int) -> list[int]:
    """The first records (in split order) until every class of the split has at least ``k`` boxes."""
    classes = {int(c["id"]) for c in split.meta["categories"]}
    counts: Counter[int] = Counter()
    chosen = []
    for i, r in enumerate(split.records):
        if all(counts[c] >= k for c in classes):
            break
        chosen.append(i)
        counts.update(int(c) for c in r.labels)
    return chosen


class FixedPrompt(GroundingSamples):
    """Detection samples with every box and one prompt of all the split's classes (ODinW fine-tuning)."""

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, torch.Tensor, list[list[tuple[int, int]]]]:
        k, j = self.index[i]
        split = self.splits[k]
        record = split.records[j]
        names = category_names(split)
        prompt = join_classes(names, range(len(names)))
        spans = [[prompt.spans[int(c)]] for c in record.labels]
        image = images_to_tensor(split_pixels(split, [int(record.image)])[0])
        return image, prompt.text, torch.tensor(record.boxes, dtype=torch.float32).reshape(-1, 4), spans


def transfer(
    model: GLIP, tokenizer, p: GLIPParams, train: Split, test: Split, shots: int, mode: str, seed: int,
    loss_fn, max_len: int,
) -> dict[str, float]:  # fmt: skip
    """Train a copy of ``model`` on ``shots``-shot ``train`` the ``mode`` way; COCO AP on ``test``."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {MODES}")
    model = copy.deepcopy(model)
    subset = Split([train.records[i] for i in k_shot_images(train, shots)], train.images, train.instances, train.meta)
    data = FixedPrompt([subset], tokenizer, max_len)
    if mode == "prompt_tuning":
        groups = [{"params": [model.prompt_tuning(max_len)], "lr": p.transfer.prompt_lr, "weight_decay": 0.0,
                   "name": "prompt"}]  # fmt: skip
    else:  # what the run trained, at the run's ratio of CNN to head learning rate
        groups = [{"params": list(model.head.parameters()), "lr": p.transfer.lr, "name": "head"}]
        if any(q.requires_grad for q in model.cnn.parameters()):
            cnn_lr = p.transfer.lr * p.variant(p.transfer.start).train.cnn_lr / p.variant(p.transfer.start).train.lr
            groups.append({"params": list(model.cnn.parameters()), "lr": cnn_lr, "name": "cnn"})
    cfg = TrainConfig(steps=p.transfer.steps, batch_size=p.transfer.batch_size, lr=p.transfer.lr, weight_decay=0.0,
                      schedule="cosine", warmup_steps=0, seed=seed, ckpt_every=0, progress=False,
                      log_every=p.transfer.steps)  # fmt: skip
    with run_dir(f"glip-transfer-{mode}-{shots}") as tmp:
        fit(model, data, loss_fn, cfg, tmp, param_groups=groups, collate_fn=data.collate,
            run_id=f"glip-transfer-{mode}-{shots}")  # fmt: skip
    return detection_ap(model, test, tokenizer, p.eval, max_len)["all"]


def transfer_all(
    model: GLIP, tokenizer, p: GLIPParams, train: Split, test: Split, seed: int, loss_fn, max_len: int
) -> dict[str, Any]:
    """``{"zero_shot": AP dict, "k<shots>": {"fine_tuning": AP dict, "prompt_tuning": AP dict}}``."""
    out: dict[str, Any] = {"zero_shot": detection_ap(model, test, tokenizer, p.eval, max_len)["all"]}
    for shots in p.transfer.shots:
        out[f"k{shots}"] = {mode: transfer(model, tokenizer, p, train, test, shots, mode, seed, loss_fn, max_len)
                            for mode in MODES}  # fmt: skip
    return out
