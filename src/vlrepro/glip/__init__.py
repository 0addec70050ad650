"""GLIP reproduction (Li et al., "Grounded Language-Image Pre-training", CVPR 2022): detection as phrase
grounding. Work in progress: so far ``prompts`` (class-list prompts, the token-level positive map, class
scores from token probabilities); the X-MHA deep-fusion layer is ``vlrepro.models.blocks.BiFusionLayer`` and
the token-level focal loss ``vlrepro.losses.focal``. No pipeline stage yet.
"""
