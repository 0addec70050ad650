"""BLIP (Li et al.): the multimodal mixture of encoder-decoder (MED) and CapFilt dataset bootstrapping.

``config`` (the ``blip`` params section), ``model`` (MED with its parameter-sharing settings, ITC/ITM/LM),
``generate`` (beam search, nucleus sampling), ``data`` (image tokens, caption pairs, the bootstrapped sets),
``run`` (one pre-training variant x seed, evaluation), ``capfilt`` (captioner, filter, bootstrapping),
``__main__`` (the stages' commands, claims and gates). Method, deviations and claims: docs/papers/blip.md.
"""
