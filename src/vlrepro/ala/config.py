"""``ala`` section of params.yaml: the adapter, its training, the explanation protocol and the variants.

The section's values are the full ALA (AEA + SBN). ``variants`` names the ablations as dotted overrides of
this section (``{"model.side_branch": false}``), validated like the section itself; ``baselines`` names the
post-hoc methods that explain the plain classifier (``python -m vlrepro.ala baselines``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from vlrepro.config import ConfigError, Section, with_overrides

BASELINES = ("gradcam", "rise", "rollout")


class ModelParams(Section):
    clip_layers: tuple[int, ...] | None = Field(
        None, description="CLIP blocks (0-based) the SBN reads; null = every block (the card: 0/3/6/9 of ViT-B/16)"
    )  # fmt: skip
    side_branch: bool = Field(True, description="false: 'AEA only', the attention is read from CLIP's last layer")
    side_dim: int = Field(64, ge=8, description="width of the Side Branch Network's tokens")
    side_heads: int = Field(4, ge=1)
    queries: int = Field(8, ge=1, description="learnable query tokens of the SBN (one map each)")
    pb_dim: int = Field(128, ge=8, description="width of the Perception Branch's convs")


class TrainParams(Section):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    warmup_steps: int = Field(100, ge=0)
    ab_weight: float = Field(1 / 15, ge=0, description="w of CE(PB) + w·CE(AB) (reference code: 1/15)")
    aea: bool = Field(True, description="Alternative Epoch Architect: attention off in every other epoch")
    flip_prob: float = Field(0.5, ge=0, le=1, description="horizontal flips of training images")
    cache_clip: bool = Field(
        True, description="compute the frozen CLIP's maps of every training image (and its mirror) once; "
        "false: at every step (large datasets)"
    )  # fmt: skip
    eval_every: int = Field(250, ge=0, description="steps between learning-curve points (cub val); 0 = none")


class ExplainParams(Section):
    images: int = Field(100, ge=1, description="cub/test images every method explains (mIoU, insertion, deletion)")
    steps: int = Field(16, ge=1, description="insertion/deletion: equal pixel chunks (steps + 1 points)")
    rise_masks: int = Field(2000, ge=1, description="RISE: N random masks (card: 2000)")
    rise_cells: int = Field(8, ge=1, description="RISE: s, the masks' grid (card: 8)")
    rise_p: float = Field(0.5, gt=0, lt=1, description="RISE: probability of keeping a cell (card: 0.5)")
    rise_precision: Literal["fp32", "bf16"] = Field(
        "bf16", description="RISE's 2,000 forwards an image under bf16 autocast: 1.9x faster on the CPU, maps "
        "correlated 0.99999 with fp32's, mIoU within 0.001 (20 world cub test images)"
    )  # fmt: skip
    blob_sigma: float = Field(0.25, gt=0, description="the centred Gaussian control, sigma / image side")
    worst: int = Field(20, ge=1, description="error analysis: the worst cases by IoU, over- vs under-attended")


class ALAParams(Section):
    source: Literal["world", "real"] = Field(
        "world", description="world: the embedded cub set; real: CUB-200-2011 (data.real.cub, cub_segmentations)"
    )  # fmt: skip
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    explain: ExplainParams = ExplainParams()
    examples: int = Field(6, ge=0, description="cub/test images whose maps every run keeps for the figures")
    baselines: tuple[str, ...] = Field(BASELINES, description="post-hoc methods explaining the plain classifier")
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"full": {}}, description="variant name -> dotted overrides of this section"
    )  # fmt: skip

    @field_validator("baselines")
    @classmethod
    def _baselines(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if unknown := [b for b in v if b not in BASELINES]:
            raise ValueError(f"unknown methods {unknown}; choose from {', '.join(BASELINES)}")
        return v

    def variant(self, name: str) -> ALAParams:
        """This section with the overrides of variant ``name`` applied (and validated)."""
        if name not in self.variants:
            raise ConfigError(f"ala.variants: no variant {name!r}; defined: {', '.join(self.variants)}")
        return with_overrides(self, self.variants[name], f"ala.variants.{name}")


Params = ALAParams  # this package's params.yaml section (vlrepro.config finds it by the package name)
