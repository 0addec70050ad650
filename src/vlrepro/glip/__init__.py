"""GLIP reproduction (Li et al., "Grounded Language-Image Pre-training", CVPR 2022): detection as phrase
grounding. Work in progress, no pipeline stage yet:

- ``prompts``: class-list prompts within a token budget, the token-level positive map, class scores from
  token probabilities;
- ``model``: ``GLIPHead``, deep fusion (``vlrepro.models.blocks.BiFusionLayer``, 0 layers = late fusion),
  anchor-free boxes and centerness per grid cell, alignment logits of cells x prompt tokens;
- ``loss``: centre-sampled assignment of grid cells to boxes, token-level focal loss
  (``vlrepro.losses.focal``), centerness-weighted GIoU and centerness BCE.
"""
