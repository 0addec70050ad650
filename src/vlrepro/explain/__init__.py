"""Explanations of vision-language decisions: GradCAM on cross-attention (``gradcam``)."""

from vlrepro.explain.gradcam import AttentionRecorder, attention_gradcam, gradcam_map, upsample

__all__ = ["AttentionRecorder", "attention_gradcam", "gradcam_map", "upsample"]
