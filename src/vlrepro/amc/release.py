"""ALBEF's released pre-trained weights (``ALBEF.pth``, 14M images: the start of the paper's AMC runs) as this
package's :class:`~vlrepro.amc.model.ALBEF`.

The release is a ``torch.save`` of ``{"model": state_dict, ...}`` in the layout of the ALBEF code base:

- ``visual_encoder.*``: a ViT-B/16 with timm's parameter names (at ALBEF's 256-px input: a 16 × 16 grid);
- ``text_encoder.bert.*``: BERT-base (transformers' names); layers ``0 .. fusion - 1`` read text only, layers
  ``fusion ..`` add ``crossattention.{self,output}.*`` to the image tokens (ALBEF: 6 and 6);
- ``text_encoder.cls.predictions.*``: the MLM head;
- ``vision_proj``, ``text_proj`` (ITC projections, with a bias), ``temp`` (the temperature itself), ``itm_head``;
- the momentum copies (``*_m``), kept as ``momentum.*`` (but the momentum BERT's fusion layers, which this
  model's momentum text encoder does not have), and the ITC queues, which it does not keep.

Every architectural size is read from the tensors' shapes (heads: width / 64, as ViT-B and BERT-base); the
tokenizer is BERT-base-uncased's WordPiece, by default the copy bundled with MiniLM (the same vocabulary).
Images are normalised with ALBEF's mean and standard deviation, and BERT keeps ALBEF's dropout (0.1). Apart
from what is listed above as not kept, a release key with no place here, or a parameter here that the
release does not fill, is an error naming the keys.
"""

from __future__ import annotations

import math
import pickle
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vlrepro.amc.model import ALBEF, ALBEFConfig
from vlrepro.models.backbones import ViTConfig
from vlrepro.models.text import TextConfig, load_tokenizer, minilm_dir

# ALBEF's image normalisation (its data transforms), not timm's ViT default
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
HEAD_DIM = 64
MAX_SCALE = 100.0  # LogitScale's cap on 1 / temperature (ALBEF's own allows 1,000)
# release entries that this model does not hold: the ITC queues, position-id buffers, an unused BERT pooler
DROPPED = re.compile(r"(^|\.)(image_queue|text_queue|idx_queue|queue_ptr\w*|position_ids)$|\.pooler\.")


def read_release(path: str | Path) -> dict[str, Tensor]:
    """The state dict inside ALBEF's ``.pth`` (tensors only: ``weights_only`` loading executes no code)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ALBEF checkpoint not found (amc.pretrain.weights; weights are never "
                                f"downloaded: give the local ALBEF.pth)")  # fmt: skip
    try:  # the file also holds the optimizer and config: plain containers, which weights_only accepts
        doc = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: not loadable as tensors only ({e}); give ALBEF's own checkpoint file") from None
    state = doc.get("model", doc) if isinstance(doc, dict) else None
    if not isinstance(state, dict) or "visual_encoder.pos_embed" not in state:
        raise ValueError(f"{path}: not an ALBEF checkpoint (no 'visual_encoder.pos_embed' in its 'model' state)")
    return state


def release_config(state: dict[str, Tensor], **overrides: Any) -> ALBEFConfig:
    """The ALBEFConfig whose model has the release's shapes (``overrides``: training settings)."""
    width = state["visual_encoder.pos_embed"].shape[-1]
    patch = state["visual_encoder.patch_embed.proj.weight"].shape[-1]
    grid = math.isqrt(state["visual_encoder.pos_embed"].shape[1] - 1)
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"visual_encoder\.blocks\.(\d+)\.", k)))
    hidden_mlp = state["visual_encoder.blocks.0.mlp.fc1.weight"].shape[0]
    vision = ViTConfig(arch="vit_base_patch16_224", img_size=grid * patch, patch_size=patch, embed_dim=width,
                       depth=depth, num_heads=width // HEAD_DIM, mlp_ratio=hidden_mlp / width, mean=MEAN, std=STD)
    words = state["text_encoder.bert.embeddings.word_embeddings.weight"]
    layers = [int(m.group(1)) for k in state if (m := re.match(r"text_encoder\.bert\.encoder\.layer\.(\d+)\.", k))]
    fusion = [int(m.group(1)) for k in state
              if (m := re.match(r"text_encoder\.bert\.encoder\.layer\.(\d+)\.crossattention\.", k))]  # fmt: skip
    if not fusion:
        raise ValueError("the ALBEF checkpoint's BERT has no cross-attention layer")
    text = TextConfig(
        vocab_size=words.shape[0], hidden_size=words.shape[1], num_layers=1 + max(layers),
        num_heads=words.shape[1] // HEAD_DIM,
        intermediate_size=state["text_encoder.bert.encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position=state["text_encoder.bert.embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state["text_encoder.bert.embeddings.token_type_embeddings.weight"].shape[0],
        pooling="cls", mlm_head=True, dropout=0.1,
    )  # fmt: skip
    temperature = float(state["temp"])
    if temperature < 1 / MAX_SCALE:
        raise ValueError(f"the ALBEF checkpoint's temperature {temperature:.4g} is below 1/{MAX_SCALE:g}, the "
                         f"smallest vlrepro's LogitScale keeps; it would be clamped")  # fmt: skip
    embed_dim = state["vision_proj.weight"].shape[0]
    return ALBEFConfig(vision=vision, text=text, text_layers=min(fusion), embed_dim=embed_dim,
                       init_temperature=temperature, proj_bias=True, **overrides)  # fmt: skip


def our_key(key: str, text_layers: int) -> str | None:
    """This model's name of release parameter ``key``; None for what it does not hold."""
    if DROPPED.search(key):
        return None
    online, momentum = key.split(".", 1)[0].removesuffix("_m"), key.split(".", 1)[0].endswith("_m")
    rest = key.split(".", 1)[1] if "." in key else ""
    if online == "visual_encoder":
        name = f"visual.body.{rest}"
    elif online in ("vision_proj", "text_proj"):
        name = f"{'image_proj' if online == 'vision_proj' else 'text_proj'}.{rest}"
    elif online == "text_encoder":
        if rest == "cls.predictions.decoder.weight":
            return None  # tied to the word embeddings, here as in ALBEF (albef_from_release checks it)
        if rest.startswith("cls."):
            name = f"text.mlm_head.{rest.removeprefix('cls.')}"
        elif m := re.match(r"bert\.encoder\.layer\.(\d+)\.(.*)", rest):
            i, tail = int(m.group(1)), m.group(2)
            if i < text_layers:
                name = f"text.bert.encoder.layer.{i}.{tail}"
            elif tail.startswith("crossattention.self."):
                name = f"fusion.{i - text_layers}.crossattention.{tail.removeprefix('crossattention.self.')}"
            elif tail.startswith("crossattention.output."):
                name = f"fusion.{i - text_layers}.crossattention.output.{tail.removeprefix('crossattention.output.')}"
            else:
                name = f"fusion.{i - text_layers}.layer.{tail}"
            if momentum and not name.startswith("text."):
                return None  # ALBEF's momentum BERT includes fusion layers; only its text encoder is used
        else:
            name = f"text.{rest}"  # bert.embeddings.*
    elif key == "temp":
        return "logit_scale.log_scale"
    elif key == "itm_head.weight" or key == "itm_head.bias":
        name = key
    else:
        raise ValueError(f"ALBEF checkpoint key {key!r} has no counterpart in vlrepro.amc.model.ALBEF")
    return f"momentum.{name}" if momentum else name


def albef_from_release(path: str | Path, tokenizer: str | Path | None = None, **overrides: Any) -> ALBEF:
    """ALBEF's release at ``path`` as an ALBEF (eval mode); ``tokenizer``: a ``tokenizer.json`` or a folder
    holding one (default: MiniLM's bundled bert-base-uncased vocabulary); ``overrides``: ALBEFConfig fields
    the training sets (momentum, distill_alpha, vision_trainable_blocks)."""
    state = read_release(path)
    for prefix in ("text_encoder", "text_encoder_m"):
        decoder = state.get(f"{prefix}.cls.predictions.decoder.weight")
        if decoder is not None and not torch.equal(decoder, state[f"{prefix}.bert.embeddings.word_embeddings.weight"]):
            raise ValueError(f"{path}: {prefix}'s MLM decoder is not tied to its word embeddings, as ALBEF's is")
    cfg = release_config(state, **overrides)
    tok_path = Path(tokenizer).expanduser() if tokenizer is not None else minilm_dir()
    tok = load_tokenizer(tok_path / "tokenizer.json" if tok_path.is_dir() else tok_path)
    if tok.get_vocab_size() != cfg.text.vocab_size:
        raise ValueError(f"{tok_path}: a tokenizer of {tok.get_vocab_size()} tokens for a BERT of {cfg.text.vocab_size}"
                         f"; give the checkpoint's own (amc.pretrain.tokenizer)")  # fmt: skip
    model = ALBEF(cfg, tok)
    ours = model.state_dict()
    mapped: dict[str, Tensor] = {}
    for key, value in state.items():
        name = our_key(key, cfg.text_layers)
        if name is None:
            continue
        if name == "logit_scale.log_scale":
            value = torch.log(1 / value.reshape(()))
        if name not in ours:
            raise ValueError(f"ALBEF checkpoint key {key!r} maps to {name!r}, which the model does not have")
        if ours[name].shape != value.shape:
            raise ValueError(f"ALBEF checkpoint key {key!r}: shape {tuple(value.shape)}, the model's {name!r} "
                             f"has {tuple(ours[name].shape)}")  # fmt: skip
        mapped[name] = value
    filled = {ours[k].data_ptr() for k in mapped}  # a tied parameter (MLM decoder = word embeddings) counts once
    missing = sorted(k for k in set(ours) - set(mapped) if ours[k].data_ptr() not in filled)
    if missing:
        raise ValueError(f"{path}: the ALBEF checkpoint does not fill {len(missing)} parameters: {missing[:8]}")
    model.load_state_dict(mapped, strict=False)
    return model.eval()
