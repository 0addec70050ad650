"""Caption decoding with the image-grounded decoder: beam search and nucleus sampling.

Both start from [DEC] (``MED.decode`` puts it in place of the first token), never emit a special token,
forbid [SEP] (end of caption) before ``min_len`` word pieces and stop at ``max_len``. Beam search keeps
``beams`` live hypotheses per image, sets aside those that end, stops once ``beams`` have ended (as
transformers' ``early_stopping=True``) and returns the best of them by log-probability per token (length
penalty 1.0); nucleus sampling draws from the smallest set of tokens whose probability reaches ``top_p``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vlrepro.blip.model import BLIP

SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[MASK]")


def _next_logprobs(model: BLIP, seqs: Tensor, image: Tensor, banned: Tensor, sep: int, allow_end: bool) -> Tensor:
    logits = model.med.decode(seqs, torch.ones_like(seqs), image)[:, -1].float()
    logits[:, banned] = float("-inf")
    if not allow_end:
        logits[:, sep] = float("-inf")
    return torch.log_softmax(logits, -1)


def _banned(model: BLIP, ids: dict[str, int]) -> Tensor:
    return torch.tensor([ids[t] for t in SPECIAL] + [model.config.enc_id, model.config.dec_id])


@torch.no_grad()
def nucleus(model: BLIP, image: Tensor, ids: dict[str, int], top_p: float = 0.9, min_len: int = 5,
            max_len: int = 20, generator: torch.Generator | None = None) -> list[list[int]]:  # fmt: skip
    """One sampled caption (token ids, without [DEC]/[SEP]) per image of ``image`` ``(B, 1 + N, D)``."""
    b, sep, banned = len(image), ids["[SEP]"], _banned(model, ids)
    seqs = torch.full((b, 1), ids["[CLS]"], dtype=torch.long)
    done = torch.zeros(b, dtype=torch.bool)
    for step in range(max_len + 1):
        logp = _next_logprobs(model, seqs, image, banned, sep, allow_end=step >= min_len)
        if step == max_len:  # out of length: end here
            nxt = torch.full((b,), sep)
        else:
            probs, order = torch.sort(logp.exp(), -1, descending=True)
            keep = probs.cumsum(-1) - probs < top_p  # the smallest prefix reaching top_p
            probs = probs * keep
            pick = torch.multinomial(probs / probs.sum(-1, keepdim=True), 1, generator=generator)
            nxt = order.gather(1, pick).squeeze(1)
        nxt = torch.where(done, torch.full_like(nxt, sep), nxt)
        seqs = torch.cat([seqs, nxt[:, None]], 1)
        done |= nxt == sep
        if done.all():
            break
    return [[t for t in row[1:].tolist()[: (row[1:] == sep).nonzero()[0].item()]] for row in seqs]


@torch.no_grad()
def beam_search(model: BLIP, image: Tensor, ids: dict[str, int], beams: int = 3, min_len: int = 5,
                max_len: int = 20) -> list[list[int]]:  # fmt: skip
    """The best of ``beams``-wide beam search per image (token ids, without [DEC]/[SEP])."""
    b, sep, banned = len(image), ids["[SEP]"], _banned(model, ids)
    seqs = torch.full((b * beams, 1), ids["[CLS]"], dtype=torch.long)
    scores = torch.full((b, beams), float("-inf"))
    scores[:, 0] = 0.0  # all beams start identical: only one may expand at the first step
    image = image.repeat_interleave(beams, 0)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    for step in range(max_len + 1):
        logp = _next_logprobs(model, seqs, image, banned, sep, allow_end=step >= min_len)
        vocab = logp.shape[-1]
        if step == max_len:  # out of length: every live beam ends here
            logp = torch.full_like(logp, float("-inf"))
            logp[:, sep] = 0.0
        cand = (scores.view(-1, 1) + logp).view(b, beams * vocab)
        top, where = cand.topk(2 * beams, dim=1)
        new_rows, new_scores = [], []
        for i in range(b):
            rows, kept = [], []
            for score, flat in zip(top[i].tolist(), where[i].tolist(), strict=True):
                beam, token = divmod(flat, vocab)
                if score == float("-inf"):
                    break
                prefix = seqs[i * beams + beam, 1:].tolist()
                if token == sep:
                    if len(finished[i]) < beams:
                        finished[i].append((score / (len(prefix) + 1), prefix))
                elif len(rows) < beams:
                    rows.append(prefix + [token])
                    kept.append(score)
            while len(rows) < beams:  # nothing left to expand: a dead beam
                rows.append(rows[0] if rows else [sep])
                kept.append(float("-inf"))
            new_rows += rows
            new_scores.append(kept)
        length = max(map(len, new_rows))
        seqs = torch.tensor([[ids["[CLS]"], *r, *[sep] * (length - len(r))] for r in new_rows])
        scores = torch.tensor(new_scores)
        if all(len(f) >= beams for f in finished):
            break
    return [max(f)[1] if f else [] for f in finished]
