"""The ``data`` params section: the embedded world's generator, the blind baselines and the real datasets."""

from __future__ import annotations

from pydantic import Field

from vlrepro.config import Section
from vlrepro.data.real.config import RealDataConfig
from vlrepro.data.world.config import WorldConfig


class BaselineParams(Section):
    """The image-only baseline of ``vlrepro.baselines`` (the other blind baselines need no settings)."""

    image_only_steps: int = Field(200, ge=1, description="training steps of the image-only ranker")
    image_only_batch_size: int = Field(64, ge=1)
    image_only_lr: float = Field(1e-3, gt=0)
    image_only_model: str = Field("resnet10t", description="timm CNN with features_only support")


class DataParams(Section):
    world: WorldConfig = WorldConfig()
    baselines: BaselineParams = BaselineParams()
    real: RealDataConfig = RealDataConfig()


Params = DataParams
