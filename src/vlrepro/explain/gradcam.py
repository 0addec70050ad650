"""GradCAM on the cross-attention of a fusion layer (ALBEF's grounding heatmap, AMC's training signal).

For cross-attention probabilities ``F`` (B, heads, text_len, prefix + h*w) and the gradient ``G`` of a
score (AMC: the summed "match" ITM logit) with respect to them::

    A = ReLU(F ⊙ clamp(G, min=0))         drop the image prefix ([CLS]) columns
    A = mean over heads, then mean over the real (unpadded) text tokens  -> (B, h, w)

The probabilities are captured by a forward hook (``AttentionRecorder``) on the module through which
the model passes them (an ``nn.Identity`` placed after the softmax), so the model needs no GradCAM code
and the captured tensor is the very one the rest of the forward used. ``attention_gradcam`` takes the
gradient with ``torch.autograd.grad``: with ``create_graph=True`` the heatmap is itself differentiable
(AMC's loss back-propagates through it, a second-order gradient); at evaluation ``create_graph=False``.
The grid ``(h, w)`` comes from the caller (the ViT's ``grid``), never from a hard-coded size.
"""

from __future__ import annotations

from types import TracebackType

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AttentionRecorder:
    """``with AttentionRecorder(module) as rec: model(...)`` keeps every output of ``module`` in ``rec.outputs``."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.outputs: list[Tensor] = []
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def _hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self.outputs.append(output)

    def __enter__(self) -> AttentionRecorder:
        self._handle = self.module.register_forward_hook(self._hook)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @property
    def last(self) -> Tensor:
        if not self.outputs:
            raise RuntimeError(f"{type(self.module).__name__} produced no output while recording; "
                               "was the layer part of the forward pass?")
        return self.outputs[-1]


def gradcam_map(
    probs: Tensor, grads: Tensor, text_mask: Tensor, grid: tuple[int, int], num_prefix: int = 1
) -> Tensor:
    """``(B, h, w)`` heatmap from attention ``probs`` and their gradient ``grads`` (both (B, heads, L, prefix+h*w))."""
    if probs.shape != grads.shape or probs.dim() != 4:
        raise ValueError(f"expected probabilities and gradients of one (B, heads, L, N) shape, got "
                         f"{tuple(probs.shape)} and {tuple(grads.shape)}")
    b, _, length, n = probs.shape
    h, w = grid
    if n - num_prefix != h * w:
        raise ValueError(f"attention over {n} image tokens does not match {num_prefix} prefix + {h}x{w} grid")
    if text_mask.shape != (b, length):
        raise ValueError(f"text mask of shape {tuple(text_mask.shape)}, expected {(b, length)}")
    cam = (probs[..., num_prefix:] * grads[..., num_prefix:].clamp(min=0)).relu().mean(1)  # (B, L, h*w)
    m = text_mask.to(cam.dtype).unsqueeze(-1)
    cam = (cam * m).sum(1) / m.sum(1).clamp(min=1.0)
    return cam.view(b, h, w)


def attention_gradcam(
    score: Tensor,
    probs: Tensor,
    text_mask: Tensor,
    grid: tuple[int, int],
    num_prefix: int = 1,
    create_graph: bool = False,
) -> Tensor:
    """GradCAM of ``score`` (a scalar, e.g. the summed match logits) on the recorded attention ``probs``.

    Samples are independent in the forward pass, so the gradient of the batch sum gives each sample its
    own gradient. ``create_graph=True`` keeps the heatmap differentiable (training with AMC).
    """
    if score.dim() != 0:
        raise ValueError(f"score must be a scalar (sum the per-sample logits), got shape {tuple(score.shape)}")
    (grads,) = torch.autograd.grad(score, probs, create_graph=create_graph, retain_graph=create_graph or None)
    return gradcam_map(probs, grads, text_mask, grid, num_prefix)


def upsample(heat: Tensor, size: tuple[int, int]) -> Tensor:
    """``(B, h, w)`` -> ``(B, H, W)``, bilinear (half-pixel centres, as the image resize)."""
    return F.interpolate(heat.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
