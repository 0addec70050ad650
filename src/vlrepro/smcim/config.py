"""``smcim`` section of params.yaml: the model, the self-paced loss, training, augmentation and the variants.

The section's values are the full SMCIM of the default profile. ``variants`` names the ablations: each is
a mapping of dotted overrides of this section (``{"model.levels": 1}``), validated like the section itself.
The DVC matrix (``dvc.yaml``, stage ``smcim``) lists variant names and seeds; ``full`` is the section as is.
``source`` picks the data: the embedded world's referring sets, or the real RefCOCO/+/g and ReferItGame
(``refclef``; ``vlrepro.smcim.real``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from vlrepro.config import ConfigError, Section, with_overrides

REFERRING_SETS = ("refcoco", "refcoco+", "refcocog")  # the world's, and the real ones of the same name
EVAL_SPLITS = ("val", "testA", "testB")
# The scored splits of each real set as the `data` stage converts it (vlrepro.data.real.refer.REFER_SETS):
# RefCOCO and RefCOCO+ (unc) have testA / testB, RefCOCOg (umd) and ReferItGame (refclef, unc) one test split.
REAL_EVAL_SPLITS = {"refcoco": ("val", "testA", "testB"), "refcoco+": ("val", "testA", "testB"),
                    "refcocog": ("val", "test"), "refclef": ("val", "test")}  # fmt: skip


class ModelParams(Section):
    fusion: Literal["ca2m", "transformer"] = Field(
        "ca2m", description="ca2m: SMCIM; transformer: the TransVG-style encoder over [REG] + visual + words"
    )  # fmt: skip
    levels: int = Field(3, ge=1, le=3, description="feature levels: CNN maps (see model.kept_maps), last BERT blocks")
    dim: int = Field(64, ge=8, description="C0, the width of a stage-1 group; stage 2 is levels × dim (C1)")
    stage1_depth: int = Field(2, ge=1, description="CA2M blocks per stage-1 group")
    stage2_depth: int = Field(3, ge=1, description="CA2M blocks of stage 2 (transformer: encoder layers)")
    num_heads: int = Field(4, ge=1)
    ffn_ratio: int = Field(2, ge=1)
    grid_stride: int = Field(16, ge=1, description="input pixels per visual token (SMCIM: 16)")

    @model_validator(mode="after")
    def _heads(self) -> ModelParams:
        if self.dim % self.num_heads:
            raise ValueError(f"dim = {self.dim} is not divisible by num_heads = {self.num_heads}")
        return self


class SelfPacedParams(Section):
    enabled: bool = Field(True, description="false: plain L1 + GIoU")
    sigma_init: float = Field(2.5, gt=0, description="initial σ0 = σ1")
    lam: float = Field(0.75, ge=0, description="λ of −λ(d0 + d1)")
    sigma_lr: float = Field(5e-5, ge=0, description="learning rate of σ0, σ1 (own optimiser group)")
    detach: bool = Field(True, description="difficulty scores computed from detached losses (see losses.self_paced)")


class TrainParams(Section):
    steps: int = Field(600, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0, description="lr of everything but the encoders and σ (paper: 1e-4)")
    encoder_lr: float = Field(
        0.0, ge=0, description="0: encoders frozen, outputs cached (smcim_features); > 0: fine-tuned (paper 1e-5)"
    )  # fmt: skip
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(30, ge=0)
    schedule: Literal["step", "cosine"] = Field(
        "step", description="step: lr × 0.1 at lr_drops (paper); cosine: to 0 after warm-up"
    )  # fmt: skip
    lr_drops: tuple[float, ...] = Field(
        (0.0833, 0.6667), description="step schedule: lr × 0.1 at these fractions of the steps (paper: epochs 10, 80)"
    )  # fmt: skip
    cell_loss: float = Field(
        0.0, ge=0, description="weight of the auxiliary cross-entropy on the target centre's cell (not in the paper)"
    )  # fmt: skip
    eval_every: int = Field(0, ge=0, description="steps between val evaluations (learning curve); 0 = at the end")
    eval_limit: int = Field(600, ge=1, description="val expressions (first eval set) scored for the learning curve")
    workers: int = Field(0, ge=0, description="DataLoader processes decoding real images beside the training "
                         "process (0: none); batches do not depend on it")

    @field_validator("lr_drops")
    @classmethod
    def _fractions(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if any(not 0 < f < 1 for f in v) or list(v) != sorted(v):
            raise ValueError("lr_drops must be increasing fractions in (0, 1)")
        return v


class AugmentParams(Section):
    views: int = Field(3, ge=1, description="cached copies of each train image: the original + views−1 augmented")
    flip_prob: float = Field(0.5, ge=0, le=1, description="horizontal flip; 'left' and 'right' swap in the text")
    scale: tuple[float, float] = Field((0.9, 1.1), description="random affine: zoom range")
    translate: float = Field(0.1, ge=0, lt=0.5, description="random affine: shift, fraction of the image side")
    colour_jitter: float = Field(0.3, ge=0, lt=1, description="brightness / contrast / saturation strength")
    blur_prob: float = Field(0.5, ge=0, le=1)
    blur_sigma: tuple[float, float] = Field((0.1, 1.0), description="Gaussian blur σ range (px)")


class SMCIMParams(Section):
    source: Literal["world", "real"] = Field(
        "world", description="world: the embedded referring sets; real: RefCOCO/+ (unc), RefCOCOg (umd) and "
        "ReferItGame (refclef, unc) as the data stage converts them into data/real (data.real.refer, "
        "coco_train2014, saiapr)"
    )  # fmt: skip
    image_size: int = Field(
        512, ge=32, description="source real: side of the square input each image is letterboxed to (paper 512); "
        "world images are read at their own size"
    )  # fmt: skip
    train_sets: tuple[str, ...] = Field(
        REFERRING_SETS, description="sets trained on together (paper: one model per dataset)"
    )  # fmt: skip
    eval_sets: tuple[str, ...] = REFERRING_SETS
    text: Literal["minilm", "world"] = Field(
        "minilm", description="language encoder: the bundled 6-layer MiniLM, or the pretrain stage's world BERT"
    )  # fmt: skip
    max_len: int = Field(40, ge=4, description="tokens per expression, [CLS]/[SEP] included")
    text_blocks: int = Field(3, ge=1, description="the BERT's layers split into this many equal blocks")
    model: ModelParams = ModelParams()
    self_paced: SelfPacedParams = SelfPacedParams()
    train: TrainParams = TrainParams()
    augment: AugmentParams = AugmentParams()
    examples: int = Field(8, ge=0, description="val expressions whose predictions each run keeps for the figures")
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"full": {}}, description="ablation name -> dotted overrides of this section"
    )  # fmt: skip

    @field_validator("train_sets", "eval_sets")
    @classmethod
    def _sets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v or any(s not in REAL_EVAL_SPLITS for s in v):
            raise ValueError(f"must list sets from: {', '.join(REAL_EVAL_SPLITS)}")
        return v

    @model_validator(mode="after")
    def _variants_valid(self) -> SMCIMParams:
        real_only = [s for s in (*self.train_sets, *self.eval_sets) if s not in REFERRING_SETS]
        if self.source == "world" and real_only:
            raise ValueError(f"{real_only[0]} is a real set (ReferItGame) with no world counterpart: set "
                             f"smcim.source: real, or choose from {', '.join(REFERRING_SETS)}")
        if self.model.levels > self.text_blocks:
            raise ValueError(f"model.levels = {self.model.levels} needs as many text_blocks (got {self.text_blocks})")
        for name, overrides in self.variants.items():
            if "source" in overrides:  # one data folder per stage: the runs, features and report read the section's
                raise ValueError(f"variants.{name}: sets source; a variant cannot change the data, set smcim.source")
            self.variant(name)
        return self

    def eval_splits(self, name: str) -> tuple[str, ...]:
        """The scored splits of set ``name``: val / testA / testB of the world; of real data the set's own."""
        return EVAL_SPLITS if self.source == "world" else REAL_EVAL_SPLITS[name]

    def variant(self, name: str) -> SMCIMParams:
        """This section with the overrides of variant ``name`` applied (and validated)."""
        if name not in self.variants:
            raise ConfigError(f"smcim.variants: no variant {name!r}; defined: {', '.join(self.variants)}")
        return with_overrides(self, self.variants[name], f"smcim.variants.{name}")


Params = SMCIMParams  # this package's params.yaml section (vlrepro.config finds it by the package name)
