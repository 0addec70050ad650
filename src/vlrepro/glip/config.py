"""``glip`` section of params.yaml: the model, training data and recipe, evaluation, transfer and variants.

The section's values are GLIP-T(B) of the default profile (deep fusion, detection data only). ``variants``
names the card's family as dotted overrides of this section (``{"model.fusion_layers": 0}``), validated like
the section itself; the DVC matrix (``dvc.yaml``, stage ``glip``) lists variant names and seeds.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from vlrepro.config import ConfigError, Section, with_overrides

DETECTION_SETS = ("det",)
GROUNDING_SETS = ("flickr", "vg")
CAPTION_SETS = ("captions",)  # pseudo-labelled by a teacher run (``pseudo``)


class ModelParams(Section):
    grid_stride: int = Field(4, ge=1, description="input pixels per grid cell; every CNN stage is resized to this grid")
    dim: int = Field(64, ge=8, description="width of the fused tokens")
    align_dim: int = Field(64, ge=8, description="width of the alignment space of S = O·Pᵀ")
    fusion_layers: int = Field(2, ge=0, description="X-MHA deep-fusion layers; 0 = late fusion (GLIP-T(A))")
    num_heads: int = Field(4, ge=1)
    tower_layers: int = Field(2, ge=0, description="3x3 conv layers (GroupNorm, GELU) before the prediction layers")
    prior_prob: float = Field(0.01, gt=0, lt=1, description="initial match probability of every (cell, token)")

    @model_validator(mode="after")
    def _heads(self) -> ModelParams:
        if self.dim % self.num_heads:
            raise ValueError(f"dim = {self.dim} is not divisible by num_heads = {self.num_heads}")
        if self.tower_layers and self.dim % 8:
            raise ValueError(f"dim = {self.dim}: the tower's GroupNorm needs a multiple of 8")
        return self


class TrainParams(Section):
    sets: tuple[str, ...] = Field(DETECTION_SETS, description="world sets: det (base classes) and grounding sets")
    detection_share: float = Field(
        0.5, gt=0, le=1, description="share of detection samples when grounding sets are mixed in (det repeated)"
    )  # fmt: skip
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0, description="the GLIP head (paper 1e-4 at batch 64 for 30 epochs)")
    cnn_lr: float = Field(0.0, ge=0, description="0: the world CNN frozen; > 0: fine-tuned at this lr (GLIP trains it)")
    weight_decay: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(100, ge=0)
    radius: float = Field(1.5, gt=0, description="centre sampling: max cells from a box centre to a positive cell")
    box_weight: float = Field(2.0, ge=0, description="GIoU loss weight (GLIP: 2)")
    max_prompt_tokens: int = Field(40, ge=4, description="token budget of a training prompt ([CLS]/[SEP] included)")
    eval_every: int = Field(0, ge=0, description="steps between learning-curve points (det val AP50); 0 = the end")
    curve_images: int = Field(150, ge=1, description="det test images scored for the learning curve")
    workers: int = Field(0, ge=0, description="DataLoader processes decoding real images beside the training "
                         "process (0: none); batches do not depend on it")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="training autocast on CPU (bf16: 1.27x faster steps in benchmarks/bench_train.py, "
        "results within the seed spread); evaluation and the k-shot transfers stay fp32"
    )  # fmt: skip

    @field_validator("sets")
    @classmethod
    def _sets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        known = DETECTION_SETS + GROUNDING_SETS + CAPTION_SETS
        if not v or any(s not in known for s in v):
            raise ValueError(f"must list sets from: {', '.join(known)}")
        return v


class PseudoParams(Section):
    teacher: str = Field("deep_gold", description="the variant whose run of the same seed labels the captions")
    threshold: float = Field(0.5, gt=0, lt=1, description="a phrase keeps the teacher's boxes scoring at least this")
    images: int = Field(3000, ge=1, description="captions/train images pseudo-labelled (first caption of each)")


class TransferParams(Section):
    start: str = Field("deep_gold", description="the variant whose run of each seed is transferred")
    shots: tuple[int, ...] = Field((2, 10), description="k of the k-shot training sets (every class >= k boxes)")
    steps: int = Field(200, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0, description="full fine-tuning")
    prompt_lr: float = Field(1e-2, gt=0, description="prompt tuning (only the text-feature offset trains)")


class EvalParams(Section):
    score_threshold: float = Field(0.05, ge=0, lt=1, description="detections below this score are dropped")
    nms_iou: float = Field(0.6, gt=0, le=1, description="per-class NMS IoU (GLIP: 0.6)")
    max_detections: int = Field(100, ge=1, description="per image (COCO: 100)")
    batch_size: int = Field(64, ge=1, description="images per forward pass in detection and grounding evaluation")
    rich_prompts: dict[str, str] | None = Field(
        None, description="class name -> a richer prompt for it (card claim 5, manual prompt engineering): "
        "det_rich scores the det/test prompt with these instead of the names; null or {} = not evaluated"
    )  # fmt: skip


# The 17 novel classes of the open-vocabulary COCO split (Bansal et al. 2018; OVR-CNN and later work).
OV_COCO_NOVEL = ("airplane", "bus", "cat", "dog", "cow", "elephant", "umbrella", "tie", "snowboard", "skateboard",
                 "cup", "knife", "cake", "couch", "keyboard", "sink", "scissors")  # fmt: skip


class RealParams(Section):
    """``source: real``: the converted sets GLIP reads (``vlrepro.glip.real``) and its input size."""

    image_size: int = Field(640, ge=32, description="side of the square input every image is letterboxed to "
                            "(GLIP: 800 x 1333)")  # fmt: skip
    det_train: str = Field("train2017", description="data/real/coco_instances subset trained on (base classes)")
    det_test: str = Field("val2017", description="data/real/coco_instances subset scored (base and novel)")
    novel_categories: tuple[str, ...] = Field(
        OV_COCO_NOVEL, min_length=1, description="COCO classes held out of detection training; every other class "
        "is base (at least one: the novel AP and its learning curve need it)"
    )  # fmt: skip


class GLIPParams(Section):
    source: Literal["world", "real"] = Field(
        "world", description="world: embedded benchmark; real: data/real's COCO instances, Flickr30k Entities, "
        "Visual Genome, COCO captions and one ODinW dataset (vlrepro.glip.real)"
    )  # fmt: skip
    real: RealParams = RealParams()
    text: Literal["world"] = Field("world", description="the pretrain stage's BERT, frozen (GLIP fine-tunes BERT-base)")
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    pseudo: PseudoParams = PseudoParams()
    transfer: TransferParams = TransferParams()
    eval: EvalParams = EvalParams()
    examples: int = Field(6, ge=0, description="det test images whose detections each run keeps for the figures")
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {"deep": {}}, description="variant name -> dotted overrides of this section"
    )  # fmt: skip

    @model_validator(mode="after")
    def _variants_valid(self) -> GLIPParams:
        for name in self.variants:
            v = self.variant(name)
            if "captions" in v.train.sets and "captions" in self.variant(v.pseudo.teacher).train.sets:
                raise ValueError(f"glip.variants.{name}: its teacher {v.pseudo.teacher!r} trains on captions too")
        return self

    def variant(self, name: str) -> GLIPParams:
        """This section with the overrides of variant ``name`` applied (and validated)."""
        if name not in self.variants:
            raise ConfigError(f"glip.variants: no variant {name!r}; defined: {', '.join(self.variants)}")
        return with_overrides(self, self.variants[name], f"glip.variants.{name}")


Params = GLIPParams  # this package's params.yaml section (vlrepro.config finds it by the package name)
