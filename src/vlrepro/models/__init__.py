"""Models of the study, each a plain ``nn.Module`` with an explicit dataclass config, and their checkpoints.

- ``backbones``: ``CNNBackbone`` / ``ViTBackbone`` (timm) and ``images_to_tensor``;
- ``text``: WordPiece tokenizer, ``TextEncoder`` (BERT), the bundled MiniLM;
- ``clip``: ``DualEncoder`` (CLIP-style); ``rec``: ``RECModel`` (minimal REC, SMCIM's seed).

A checkpoint folder holds ``model.safetensors``, ``config.json`` (``{"kind", "config", ...}``; a paper's own
kind, registered with ``register_kind``, adds the ``"module"`` defining it) and, for models that read text,
``tokenizer.json``; ``load_pretrained(folder)`` rebuilds the module from these alone. The folders of the
``pretrain`` stage live under ``checkpoints/pretrain/<model>/``::

    from vlrepro.models import load_pretrained
    cnn = load_pretrained("checkpoints/pretrain/cnn")      # CNNBackbone, eval mode
    clip = load_pretrained("checkpoints/pretrain/clip")    # DualEncoder, tokenizer attached
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import typing
from pathlib import Path
from typing import Any

from torch import nn

FORMAT = "vlrepro.pretrained/1"
# kind -> (module, model class, config class, whether the model reads text and so takes a tokenizer)
KINDS: dict[str, tuple[str, str, str, bool]] = {
    "cnn": ("vlrepro.models.backbones", "CNNBackbone", "CNNConfig", False),
    "vit": ("vlrepro.models.backbones", "ViTBackbone", "ViTConfig", False),
    "text": ("vlrepro.models.text", "TextEncoder", "TextConfig", True),
    "clip": ("vlrepro.models.clip", "DualEncoder", "CLIPConfig", True),
    "rec": ("vlrepro.models.rec", "RECModel", "RECConfig", True),
}  # a paper's own model adds its kind when its module is imported (register_kind): ALBEF, in AMC's package
_BUILT_IN = frozenset(KINDS)
_EXPORTS = {
    "CNNBackbone": "backbones", "CNNConfig": "backbones", "ViTBackbone": "backbones", "ViTConfig": "backbones",
    "images_to_tensor": "backbones", "TextEncoder": "text", "TextConfig": "text", "train_wordpiece": "text",
    "load_tokenizer": "text", "load_minilm": "text", "load_hf_text_encoder": "text", "DualEncoder": "clip",
    "CLIPConfig": "clip", "RECModel": "rec", "RECConfig": "rec",
}  # fmt: skip

__all__ = sorted([*_EXPORTS, "KINDS", "config_from_dict", "load_pretrained", "register_kind", "save_pretrained"])


def __getattr__(name: str) -> Any:
    # Lazy, so that importing the package does not pull in timm and transformers.
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)


def register_kind(kind: str, module: str, model_cls: str, cfg_cls: str, reads_text: bool) -> None:
    """Let ``save_pretrained`` / ``load_pretrained`` handle ``module.model_cls``: a paper's own model calls this
    in its module, so that this package imports no paper's code (and no paper's stage depends on another's)."""
    KINDS[kind] = (module, model_cls, cfg_cls, reads_text)


def _classes(kind: str) -> tuple[type[nn.Module], type, bool]:
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)} (a paper's model registers its "
                         f"kind when its module is imported)")
    module, model_cls, cfg_cls, reads_text = KINDS[kind]
    mod = importlib.import_module(module)
    return getattr(mod, model_cls), getattr(mod, cfg_cls), reads_text


def _kind_of(model: nn.Module) -> str:
    for kind in KINDS:
        model_cls, _, _ = _classes(kind)
        if type(model) is model_cls:
            return kind
    raise TypeError(f"{type(model).__name__} is not a checkpointable model; known kinds: {', '.join(KINDS)}")


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Rebuild a (nested) dataclass config from its ``dataclasses.asdict`` form (lists back to tuples)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    if unknown := sorted(set(data) - names):
        raise ValueError(f"{cls.__name__}: unknown config keys {unknown}; known: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = config_from_dict(hint, value)  # type: ignore[arg-type]
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def _without_weights(cfg: Any) -> Any:
    """The config with every ``weights`` path cleared: the checkpoint itself now holds those weights."""
    changes = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if f.name == "weights":
            changes[f.name] = None
        elif dataclasses.is_dataclass(value):
            changes[f.name] = _without_weights(value)
    return dataclasses.replace(cfg, **changes)


def _tokenizer_of(model: nn.Module) -> Any:
    for m in model.modules():
        if (tok := getattr(m, "tokenizer", None)) is not None:
            return tok
    return None


def save_pretrained(model: nn.Module, folder: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors``, ``config.json`` (+ ``tokenizer.json``) into ``folder``, each atomically."""
    from safetensors.torch import save_model

    from vlrepro.io import atomic_path, atomic_write_text, write_json

    folder = Path(folder)
    kind = _kind_of(model)
    tokenizer = _tokenizer_of(model)
    if KINDS[kind][3] and tokenizer is None:
        raise ValueError(f"a {kind} model reads text: attach its tokenizer before saving, or it cannot be used later")
    with atomic_path(folder / "model.safetensors") as tmp:
        save_model(model, str(tmp))  # handles tied weights (the MLM decoder shares the word embeddings)
    if tokenizer is not None:
        atomic_write_text(folder / "tokenizer.json", tokenizer.to_str())
    doc = {"format": FORMAT, "kind": kind, "config": dataclasses.asdict(_without_weights(model.config)),
           **({} if kind in _BUILT_IN else {"module": KINDS[kind][0]})}  # fmt: skip
    write_json(folder / "config.json", {**doc, **({"meta": meta} if meta else {})})
    return folder


def load_pretrained(folder: str | Path, device: str = "cpu") -> nn.Module:
    """The module saved by ``save_pretrained`` in ``folder``, weights loaded (strict), in eval mode."""
    from safetensors.torch import load_model

    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint config; run the `pretrain` stage (dvc repro pretrain) first")
    doc = json.loads(path.read_text())
    if doc.get("format") != FORMAT:
        raise ValueError(f"{path}: format {doc.get('format')!r}, this code reads {FORMAT!r}")
    module = doc.get("module")
    if doc["kind"] not in KINDS and isinstance(module, str) and module.startswith("vlrepro."):
        importlib.import_module(module)  # a paper's kind registers itself on import
    model_cls, cfg_cls, reads_text = _classes(doc["kind"])
    cfg = config_from_dict(cfg_cls, doc["config"])
    if reads_text:
        from vlrepro.models.text import load_tokenizer

        model = model_cls(cfg, load_tokenizer(folder / "tokenizer.json"))
    else:
        model = model_cls(cfg)
    load_model(model, folder / "model.safetensors", strict=True, device=device)
    return model.to(device).eval()
