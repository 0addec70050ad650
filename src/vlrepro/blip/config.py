"""``blip`` section of params.yaml: data, MED, pre-training recipe, CapFilt, evaluation and variants.

The section's values are the no-CapFilt baseline with BLIP's sharing (all but self-attention), pre-trained
on the human captions plus the raw web captions. ``variants`` names the parameter-sharing ablation and the
CapFilt variants as dotted overrides of this section; the DVC matrices list variant names and seeds.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from vlrepro.config import ConfigError, Section, with_overrides


class DataParams(Section):
    human_images: int | None = Field(600, ge=1, description="captions/train images (all their captions) as the "
                                     "human set (null = all)")
    web_images: int | None = Field(None, ge=1, description="web/train images used (null = all)")


class ModelParams(Section):
    sharing: Literal["all", "all_except_ca", "all_except_sa", "none"] = Field(
        "all_except_sa", description="what the decoder shares with the encoder (card Table 3; BLIP: all but SA)"
    )  # fmt: skip
    queue_size: int = Field(1024, ge=1, description="ITC queue of momentum features (BLIP 57,600 for 14M images)")
    momentum: float = Field(0.995, ge=0, lt=1)
    alpha: float = Field(0.4, ge=0, le=1, description="weight of the momentum model's soft ITC targets")
    alpha_ramp_steps: int = Field(200, ge=0, description="alpha rises linearly from 0 over these steps (BLIP: 1 epoch)")
    label_smoothing: float = Field(0.1, ge=0, lt=1)


class TrainParams(Section):
    steps: int = Field(600, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0, description="new parts: cross-attention, ITM head, the LM head's transform")
    encoder_lr: float = Field(2e-4, ge=0, description="parts initialised from the world CLIP")
    weight_decay: float = Field(0.05, ge=0)
    warmup_steps: int = Field(50, ge=0)
    itm_negatives: Literal["hard", "random"] = Field(
        "random", description="hard: drawn by contrastive similarity (BLIP; collapses to the prior on the world)"
    )  # fmt: skip
    balanced_itm: bool = Field(
        True, description="weight ITM's positive twice: a 1:1 prior (the gate's test) instead of the batch's 1:2"
    )  # fmt: skip
    world_negatives: bool = Field(
        True, description="the embedded world says which batch texts are true of which images: never negatives"
    )  # fmt: skip
    precision: Literal["fp32", "bf16"] = "fp32"
    eval_every: int = Field(150, ge=0, description="steps between learning-curve points (captions val); 0 = none")


class BootstrapParams(Section):
    filter: bool = Field(False, description="drop web (and synthetic) texts the filter's ITM calls a mismatch")
    captioner: Literal["none", "nucleus", "beam"] = Field(
        "none", description="add one synthetic caption per web image, decoded this way"
    )  # fmt: skip
    shared: bool = Field(False, description="captioner and filter are one model fine-tuned with all losses")


class CapFiltParams(Section):
    steps: int = Field(300, ge=1, description="fine-tuning steps of the captioner and of the filter (human set)")
    batch_size: int | None = Field(None, ge=1, description="fine-tuning batch; null: train.batch_size")
    lr: float = Field(2e-4, gt=0)
    top_p: float = Field(0.9, gt=0, le=1, description="nucleus sampling (BLIP 0.9)")
    threshold: float = Field(0.5, gt=0, lt=1, description="the filter keeps texts with ITM match probability >= this")


class EvalParams(Section):
    k: int = Field(16, ge=1, description="retrieval: ITC's top k re-ranked by ITM + ITC")
    beams: int = Field(3, ge=1)
    min_len: int = Field(5, ge=1, description="captioning: tokens before [SEP] may end a caption")
    max_len: int = Field(20, ge=1)
    batch_size: int = Field(256, ge=1)
    curve_pairs: int = Field(200, ge=1, description="captions val pairs of the learning curve's ITM accuracy")


class BLIPParams(Section):
    source: Literal["world", "real"] = Field(
        "world", description="world: captions + web; real: data/real's COCO Karpathy (data.real.coco_karpathy) "
        "+ web caption file (data.real.web_captions)"
    )  # fmt: skip
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    bootstrap: BootstrapParams = BootstrapParams()
    capfilt: CapFiltParams = CapFiltParams()
    eval: EvalParams = EvalParams()
    examples: int = Field(6, ge=0, description="captions/test images whose captions every run keeps")
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"share_all_but_sa": {}}, description="variant name -> dotted overrides"
    )  # fmt: skip

    def variant(self, name: str) -> BLIPParams:
        """This section with the overrides of variant ``name`` applied (and validated)."""
        if name not in self.variants:
            raise ConfigError(f"blip.variants: no variant {name!r}; defined: {', '.join(self.variants)}")
        return with_overrides(self, self.variants[name], f"blip.variants.{name}")


Params = BLIPParams  # this package's params.yaml section (vlrepro.config finds it by the package name)
