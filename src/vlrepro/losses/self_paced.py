"""SMCIM's self-paced sample-informativeness loss.

Per sample, two losses (L1 and GIoU) each get a difficulty score ``d = exp((L − μ)² / σ²)`` with a
learnable ``σ`` per loss and ``μ = 0``: the larger the loss, the larger the weight, so hard samples count
more. The total is ``d0·L_L1 + d1·L_giou − λ·(d0 + d1)`` averaged over the batch.

What ``σ`` learns: ``∂/∂σ [d·(L − λ)] = (L − λ)·∂d/∂σ`` and ``∂d/∂σ = −2(L−μ)²·d/σ³ < 0``, so a batch whose
losses sit above λ gets a negative gradient (σ grows, every weight moves towards 1: the emphasis on hard
samples relaxes), and one below λ a positive gradient (σ shrinks, the emphasis sharpens). λ is the loss
level at which the emphasis is in balance.

Detaching (the card leaves it open). With ``detach=True`` (our default) ``d`` is computed from the
detached losses, so for the network each ``d`` is a plain sample weight — the usual reading of self-paced
learning, where weights and model are optimised in turn — and only ``σ`` gets the gradient of the
difficulty term (the ``−λ·d`` term then touches σ alone). With ``detach=False`` the network also sees
``∂d/∂L``: each sample's gradient is scaled by ``d·(1 + 2L(L−λ)/σ²)`` instead of ``d``, a further boost of
samples above λ and a damping of those below it. The ablation ``self_paced_attached`` measures the difference.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def difficulty(loss: Tensor, sigma: Tensor, mu: float = 0.0) -> Tensor:
    """``D_{μ,σ}(L) = exp((L − μ)² / σ²)`` elementwise."""
    return torch.exp((loss - mu) ** 2 / sigma**2)


class SelfPacedLoss(nn.Module):
    """``forward(l1, giou) -> {"loss", "d_l1", "d_giou"}`` from per-sample losses (N,); σ0, σ1 are parameters.

    Give ``sigmas()`` their own optimiser group (SMCIM: lr 5e-5, i.e. different from the network's).
    """

    def __init__(self, sigma_init: float = 2.5, lam: float = 0.75, detach: bool = True):
        super().__init__()
        if sigma_init <= 0:
            raise ValueError(f"sigma_init = {sigma_init}: must be > 0")
        self.sigma = nn.Parameter(torch.full((2,), float(sigma_init)))
        self.lam, self.detach = lam, detach

    def forward(self, l1: Tensor, giou: Tensor) -> dict[str, Tensor]:
        source = (l1.detach(), giou.detach()) if self.detach else (l1, giou)
        d0, d1 = difficulty(source[0], self.sigma[0]), difficulty(source[1], self.sigma[1])
        total = d0 * l1 + d1 * giou - self.lam * (d0 + d1)
        return {"loss": total.mean(), "d_l1": d0.detach().mean(), "d_giou": d1.detach().mean()}

