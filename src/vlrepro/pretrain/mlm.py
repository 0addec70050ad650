"""Masked language modelling of the text encoder on world text (BERT's recipe).

Masking rule (``mask_tokens``): each non-special token is selected with probability ``prob``; a selected
token becomes [MASK] 80% of the time, a uniformly random vocabulary token 10%, and stays as it is 10%;
the loss and the accuracy are taken at the selected positions only. ``[CLS]``, ``[SEP]`` and padding are
never selected. Metric: ``mlm_acc``, top-1 accuracy at the selected positions of held-out texts under a
fixed masking draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import Tensor, nn

from vlrepro.models.text import TextEncoder, encode_rows, special_ids
from vlrepro.pretrain.data import pad_stack, pad_texts
from vlrepro.train import evaluating

IGNORE = -100


def mask_tokens(
    ids: Tensor, maskable: Tensor, mask_id: int, vocab_size: int, prob: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """``(masked ids, labels)`` of same shape as ``ids``; labels are IGNORE except at the selected positions."""
    draw = torch.rand(ids.shape, generator=generator)
    selected = (draw < prob) & maskable
    how = torch.rand(ids.shape, generator=generator)
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator)
    out = torch.where(selected & (how < 0.8), torch.full_like(ids, mask_id), ids)
    out = torch.where(selected & (how >= 0.8) & (how < 0.9), random_ids, out)
    return out, torch.where(selected, ids, torch.full_like(ids, IGNORE))


class MaskedTexts(torch.utils.data.Dataset):
    """Texts tokenised once; each item is freshly masked: ``(masked ids, labels)`` 1-D, unpadded."""

    def __init__(self, texts: Sequence[str], tokenizer: Tokenizer, max_len: int, prob: float):
        sp = special_ids(tokenizer)
        self.rows = encode_rows(tokenizer, texts, max_len)
        self.special = torch.tensor([sp["[CLS]"], sp["[SEP]"], sp["[PAD]"]])
        self.mask_id, self.pad_id = sp["[MASK]"], sp["[PAD]"]
        self.vocab_size, self.prob = tokenizer.get_vocab_size(), prob

    def __len__(self) -> int:
        return len(self.rows)

    def mask(self, row: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        maskable = ~torch.isin(row, self.special)
        return mask_tokens(row, maskable, self.mask_id, self.vocab_size, self.prob, generator)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.mask(self.rows[i])  # the training loop seeds torch's RNG per sample

    def collate(self, items: list[tuple[Tensor, Tensor]]) -> dict[str, Tensor]:
        return {**pad_texts([a for a, _ in items], self.pad_id), "labels": pad_stack([b for _, b in items], IGNORE)}


class MaskedLM(nn.Module):
    """The encoder with its MLM head in one forward, so that DDP sees every parameter it trains."""

    def __init__(self, encoder: TextEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.encoder.mlm_logits(self.encoder(input_ids, attention_mask))


def mlm_loss(model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Cross-entropy at the selected positions; ``model`` is a ``MaskedLM`` (or its DDP wrapper)."""
    logits = model(batch["input_ids"], batch["attention_mask"])
    return {"loss": F.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=IGNORE)}


@torch.no_grad()
def evaluate_mlm(model: TextEncoder, data: MaskedTexts, seed: int = 0, batch: int = 512) -> dict[str, float]:
    """``{"mlm_acc"}`` at the selected positions of ``data`` under the masking draw of ``seed``."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    items = [data.mask(row, gen) for row in data.rows]
    correct = total = 0
    with evaluating(model):
        for start in range(0, len(items), batch):
            b = {k: v.to(device) for k, v in data.collate(items[start : start + batch]).items()}
            pred = model.mlm_logits(model(b["input_ids"], b["attention_mask"])).argmax(-1)
            selected = b["labels"] != IGNORE
            correct += int((pred[selected] == b["labels"][selected]).sum())
            total += int(selected.sum())
    return {"mlm_acc": correct / max(total, 1)}
