"""SMCIM with its encoders fine-tuned (``smcim.train.encoder_lr > 0``, the paper's 1e-5): images in, box out.

The cached-feature path (``vlrepro.smcim.run``) is what fits a CPU; this one is the paper's recipe for a
GPU: each sample is augmented afresh (flip with left/right swapped, affine, colour jitter, blur), goes
through the CNN and the text encoder, and the encoders get their own optimiser group at ``encoder_lr``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vlrepro.data.records import load_split
from vlrepro.metrics.boxes import cxcywh_to_xyxy, xyxy_to_cxcywh
from vlrepro.pretrain.data import pad_texts
from vlrepro.smcim.augment import apply_view, draw_view, transform_boxes
from vlrepro.smcim.config import SMCIMParams
from vlrepro.smcim.features import block_outputs, visual_levels
from vlrepro.smcim.model import SMCIMOutput
from vlrepro.train import evaluating
from vlrepro.transforms import swap_left_right


class EndToEnd(nn.Module):
    """CNN + text encoder + SMCIM/TransVG fusion: ``forward(images, input_ids, attention_mask) -> SMCIMOutput``."""

    def __init__(self, cnn: nn.Module, text: nn.Module, fusion: nn.Module, text_blocks: int, grid_stride: int):
        super().__init__()
        self.cnn, self.text, self.fusion, self.text_blocks = cnn, text, fusion, text_blocks
        self.grid_stride = grid_stride

    def visual_levels(self, images: Tensor) -> list[Tensor]:
        return visual_levels(self.cnn, images, self.grid_stride)

    def forward(self, images: Tensor, input_ids: Tensor, attention_mask: Tensor) -> SMCIMOutput:
        words = block_outputs(self.text.hidden_states(input_ids, attention_mask), self.text_blocks)
        return self.fusion(self.visual_levels(images), words, attention_mask)


class ImageExpressions(torch.utils.data.Dataset):
    """``(image, expression ids, normalised cxcywh box)``; with ``augment`` each draw is a fresh view."""

    def __init__(self, split_dir: Path, tokenizer: Any, p: SMCIMParams, augment: bool):
        from vlrepro.models.backbones import images_to_tensor

        split = load_split(split_dir)
        self.images = images_to_tensor(np.array(split.images))
        self.size = self.images.shape[-1]
        self.records = split.records
        self.texts = [r.text for r in self.records]
        self.boxes_px = torch.tensor([r.boxes[0] for r in self.records], dtype=torch.float32)
        self.tokenizer, self.p, self.augment = tokenizer, p, augment

    def __len__(self) -> int:
        return len(self.records)

    def image(self, i: int) -> Tensor:
        """Expression ``i``'s image, float (3, size, size) in [0, 1]."""
        return self.images[int(self.records[i].image)]

    def input_box(self, i: int) -> Tensor:
        """Expression ``i``'s target as pixel xyxy (1, 4) in the image of ``image(i)``."""
        return self.boxes_px[i : i + 1]

    def to_pixels(self, boxes: Tensor) -> Tensor:
        """Predicted normalised xyxy boxes of every expression, in order -> pixels of the original images."""
        return boxes * self.size

    def __getitem__(self, i: int) -> tuple[Tensor, str, Tensor]:
        image, box, text = self.image(i), self.input_box(i), self.texts[i]
        if self.augment:  # the global RNG, seeded per sample by the training loop
            view = draw_view(1, self.size, self.p.augment)
            image = apply_view(image[None], view)[0]
            box = transform_boxes(box, view, torch.zeros(1, dtype=torch.long), self.size)
            text = swap_left_right(text) if bool(view.flip[0]) else text
        return image, text, xyxy_to_cxcywh(box[0] / self.size)

    def collate(self, items: list[tuple[Tensor, str, Tensor]]) -> dict[str, Tensor]:
        from vlrepro.models.text import encode_rows, special_ids

        rows = encode_rows(self.tokenizer, [t for _, t, _ in items], self.p.max_len)
        return {
            "images": torch.stack([a for a, _, _ in items]),
            **pad_texts(rows, special_ids(self.tokenizer)["[PAD]"]),
            "boxes": torch.stack([c for _, _, c in items]),
        }


@torch.no_grad()
def predict(model: EndToEnd, data: ImageExpressions, batch: int = 128) -> Tensor:
    """Pixel xyxy predictions for every expression of ``data`` (built with ``augment=False``)."""
    out = []
    device = next((q.device for q in model.parameters()), torch.device("cpu"))  # fit leaves it on a GPU if any
    with evaluating(model):
        for start in range(0, len(data), batch):
            b = data.collate([data[i] for i in range(start, min(start + batch, len(data)))])
            out.append(model(*(b[k].to(device) for k in ("images", "input_ids", "attention_mask"))).boxes.cpu())
    return data.to_pixels(cxcywh_to_xyxy(torch.cat(out)))
