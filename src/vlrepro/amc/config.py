"""``amc`` section of params.yaml: the AMC reproduction (ALBEF-style model + attention mask consistency).

Variants are named here, each a few overrides of the card's loss settings; dvc.yaml's matrix only lists
their names. Defaults are the `default` profile (embedded world, 2-core CPU).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from vlrepro.config import Section

PRETRAIN_SETS = ("captions", "flickr", "web", "vg")  # world sets whose records hold an image's text
# World set name -> its conversion under data/real (source: real) and the data.real key behind it.
REAL_SETS = {"vg": ("visual_genome", "visual_genome"), "flickr": ("flickr30k_entities", "flickr30k_entities"),
             "refcoco+": ("refcoco+", "refer"), "captions": ("coco_karpathy", "coco_karpathy")}  # fmt: skip
EVAL_SPLITS: dict[str, tuple[str, ...]] = {"flickr": ("val", "test"), "refcoco+": ("val", "testA", "testB")}
PAPER = "AMC"
CLAIM_METRICS = ("flickr.test.pointing", "refcoco+.testA.pointing", "refcoco+.testB.pointing")  # the card's splits
_VARIANT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class VariantParams(Section):
    """One AMC variant: the card's loss (λ1 L_mean + λ2 L_max) with its own weights, box share, GradCAM layer."""

    lambda1: float = Field(0.2, ge=0, description="weight of L_mean (0 = off)")
    lambda2: float = Field(0.8, ge=0, description="weight of L_max (0 = off)")
    delta1: float = Field(0.1, ge=0, description="margin Δ1 of L_mean")
    delta2: float = Field(0.5, ge=0, description="margin Δ2 of L_max")
    box_share: float = Field(1.0, gt=0, le=1, description="share of training regions whose box mask AMC may use")
    gradcam_layer: int = Field(0, description="fusion layer (0-based, negative from the last) of the heatmap, "
                               "for training and evaluation; unset: amc.gradcam_layer")


class AugmentParams(Section):
    """Joint image + mask augmentation (the card: resize, flip, grey, colour jitter)."""

    flip: bool = Field(True, description="horizontal flip of image and mask; 'left'/'right' swap in the text")
    crop_scale: float = Field(0.8, gt=0, le=1, description="random crop of side fraction in [crop_scale, 1], "
                              "resized back (1 = no crop)")
    jitter: float = Field(0.1, ge=0, lt=1, description="brightness/contrast jitter amplitude (no hue: colour "
                          "words name the world's objects)")
    grey_prob: float = Field(0.0, ge=0, le=1, description="probability of a greyscale image (0 on the world, "
                             "where colour words must stay groundable)")


class AMCEvalParams(Section):
    sets: dict[str, tuple[str, ...]] = Field(
        default_factory=lambda: dict(EVAL_SPLITS), description="world sets and splits of the pointing game"
    )
    max_samples: int | None = Field(None, ge=1, description="first N samples (phrases/expressions) per split")
    batch_size: int = Field(256, ge=1)
    heatmap_images: int = Field(6, ge=0, description="fixed samples per figure split whose heatmaps are saved")
    curve_every: int = Field(250, ge=0, description="steps between learning-curve points (pointing and ITM "
                             "accuracy on flickr val); 0 = none")
    curve_samples: int = Field(200, ge=1, description="first flickr val phrases of the learning curve")

    @field_validator("sets")
    @classmethod
    def _sets(cls, v: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for name, splits in v.items():
            if name not in EVAL_SPLITS:
                raise ValueError(f"unknown evaluation set {name!r}; allowed: {', '.join(EVAL_SPLITS)}")
            if bad := [s for s in splits if s not in EVAL_SPLITS[name]]:
                raise ValueError(f"{name}: unknown splits {bad}; allowed: {', '.join(EVAL_SPLITS[name])}")
        return v

    def splits(self) -> list[tuple[str, str]]:
        """The evaluated (set, split) pairs, in params order."""
        return [(name, split) for name, splits in self.sets.items() for split in splits]


class ALBEFPretrainParams(Section):
    """The ALBEF pre-training phase (stage ``amc_pretrain``): ITC + ITM + MLM on world image-text pairs, no
    boxes. The paper starts AMC from ALBEF weights pre-trained on image-text data (COCO, Visual Genome, web
    captions) and only then fine-tunes with box masks. Here: world captions, flickr captions and the vg
    region descriptions, as texts only."""

    sets: tuple[str, ...] = Field(("captions", "flickr", "vg"), min_length=1,
                                  description="world sets whose train texts (whole captions, region "
                                  "descriptions) are the pairs")
    weights: Path | None = Field(None, description="ALBEF's released ALBEF.pth (14M images), where the paper "
                                 "starts: the phase loads it instead of pre-training from CLIP (sets, steps unused)")
    tokenizer: Path | None = Field(None, description="with weights: the checkpoint's bert-base-uncased tokenizer "
                                   "(tokenizer.json or its folder); null = MiniLM's bundled copy of that vocabulary")
    steps: int = Field(3000, ge=0, description="0 = no pre-training phase: the AMC runs start from CLIP")
    batch_size: int = Field(32, ge=2)
    lr: float = Field(1e-3, gt=0, description="peak lr of the new parts (cross-attention, ITM head)")
    encoder_lr: float = Field(3e-4, gt=0, description="peak lr of the parts that come from CLIP")
    warmup_steps: int = Field(100, ge=0)
    eval_every: int = Field(500, ge=0, description="steps between learning-curve points; 0 = end only")
    eval_samples: int = Field(200, ge=1, description="flickr val phrases of the ITM curve (each with a negative)")

    @field_validator("sets")
    @classmethod
    def _sets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if bad := [s for s in v if s not in PRETRAIN_SETS]:
            raise ValueError(f"unknown pre-training sets {bad}; allowed: {', '.join(PRETRAIN_SETS)}")
        return v


class AMCParams(Section):
    source: Literal["world", "real"] = Field("world", description="world: embedded benchmark; real: data/real "
                                             "(Visual Genome, Flickr30k Entities, RefCOCO+)")
    train_set: Literal["vg"] = Field("vg", description="box-annotated region descriptions (one box each)")
    train_limit: int | None = Field(None, ge=1, description="first N training regions (null = all)")
    exclude_eval_images: bool = Field(True, description="real data: leave out the training regions of images the "
                                      "evaluation scores (Visual Genome holds RefCOCO+ and Flickr30k test images)")
    vision_trainable_blocks: int | None = Field(
        1, ge=0, description="last ViT blocks fine-tuned (null = all, as ALBEF; 0 = frozen ViT). The default "
        "profile trains one of four: the frozen prefix runs once per batch without autograd (CPU budget)"
    )  # fmt: skip
    text_layers: int = Field(2, ge=1, description="BERT layers of the text encoder; the rest become fusion layers")
    gradcam_layer: int = Field(0, description="fusion layer of the heatmap of every variant that sets none (ALBEF's "
                               "release: 2, its layer 8, as the paper)")
    max_len: int = Field(25, ge=4, description="tokens per text ([CLS]/[SEP] included); card: 25")
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(32, ge=2)
    lr: float = Field(1e-3, gt=0, description="peak lr of the new parts (cross-attention, ITM head)")
    encoder_lr: float = Field(3e-4, gt=0, description="peak lr of the pre-trained parts")
    weight_decay: float = Field(0.02, ge=0)
    warmup_steps: int = Field(100, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine ends at lr * this (card: 1e-5 -> 1e-6)")
    workers: int = Field(0, ge=0, description="DataLoader processes decoding real images beside the training "
                         "process, both phases (0: none); batches do not depend on it")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="training autocast on CPU, both phases (bf16: 1.3x faster steps in "
        "benchmarks/bench_train.py); evaluation stays fp32")
    text_pooling: Literal["mean", "cls"] = Field(
        "mean", description="ITC text feature: mean of the text encoder's tokens (how the world CLIP aligned "
        "text, so ITC starts aligned) or ALBEF's [CLS]")
    itm_negatives: Literal["random", "hard"] = Field(
        "random", description="ITM negatives: another image/text of the batch drawn uniformly, or ALBEF's hard "
        "ones (drawn by contrastive similarity; on the world, whose short texts repeat across images, these "
        "are often true matches and ITM collapses to 'no match')")
    pretrain: ALBEFPretrainParams = ALBEFPretrainParams()
    mlm_prob: float = Field(0.15, gt=0, lt=1)
    momentum: float = Field(0.995, ge=0, lt=1, description="EMA of the momentum encoders (ITC distillation)")
    distill_alpha: float = Field(0.4, ge=0, le=1, description="weight of the momentum model's soft ITC targets")
    augment: AugmentParams = AugmentParams()
    eval: AMCEvalParams = AMCEvalParams()
    variants: dict[str, VariantParams] = Field(
        default_factory=lambda: {
            "baseline": VariantParams(lambda1=0, lambda2=0),
            "mean_only": VariantParams(lambda2=0),
            "max_only": VariantParams(lambda1=0),
            "amc": VariantParams(),
        },
        description="name -> loss settings; dvc.yaml's amc matrix names them",
    )

    @model_validator(mode="before")
    @classmethod
    def _variants_take_the_section_layer(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "gradcam_layer" not in data:
            return data
        variants = data.get("variants", cls.model_fields["variants"].default_factory())  # type: ignore[misc]
        as_dicts = {n: v.model_dump(exclude_unset=True) if isinstance(v, VariantParams) else v
                    for n, v in variants.items()}  # fmt: skip
        layer = {"gradcam_layer": data["gradcam_layer"]}
        return {**data, "variants": {n: layer | v if isinstance(v, dict) else v for n, v in as_dicts.items()}}

    @field_validator("variants")
    @classmethod
    def _names(cls, v: dict[str, VariantParams]) -> dict[str, VariantParams]:
        if bad := [n for n in v if not _VARIANT_NAME.match(n)]:
            raise ValueError(f"variant names {bad} must match {_VARIANT_NAME.pattern} (files are <variant>-<seed>)")
        return v

    @model_validator(mode="after")
    def _claims_need(self) -> AMCParams:
        if missing := [n for n in ("baseline", "amc") if n not in self.variants]:
            raise ValueError(f"variants must define {missing}: the claims compare amc with baseline")
        if self.source == "real" and (bad := [s for s in self.pretrain.sets if s not in REAL_SETS]):
            usable = ", ".join(s for s in PRETRAIN_SETS if s in REAL_SETS)
            raise ValueError(f"pretrain.sets: {bad} have no real counterpart (ALBEF's web captions are not among "
                             f"the adapters); with source: real use {usable}")
        return self

    def variant(self, name: str) -> VariantParams:
        if name not in self.variants:
            raise KeyError(f"amc.variants has no variant {name!r}; defined: {', '.join(self.variants)}")
        return self.variants[name]


Params = AMCParams  # this package's params.yaml section (vlrepro.config finds it by the package name)
