"""``data.real`` in params.yaml: where the real datasets live. ``null`` = not available here."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from vlrepro.config import Section


class RealDataConfig(Section):
    """Paths to datasets on disk (the `paper` profile). See the README's "Real datasets" for where to get them."""

    refer: Path | None = Field(None, description="refer-layout root with refcoco/, refcoco+/, refcocog/, refclef/")
    coco_train2014: Path | None = Field(None, description="COCO train2014 images (RefCOCO/+/g images)")
    saiapr: Path | None = Field(None, description="saiapr_tc-12 images (ReferItGame / refclef)")
    flickr30k_entities: Path | None = Field(None, description="Flickr30k Entities root with Annotations/ Sentences/")
    flickr30k_images: Path | None = Field(None, description="Flickr30k images (flickr30k-images/)")
    cub: Path | None = Field(None, description="CUB_200_2011/ root (images.txt, classes.txt, ...)")
    cub_segmentations: Path | None = Field(None, description="CUB segmentations/ folder (bird masks)")
    cub_split_seed: int = Field(0, ge=0, description="seed of the 5,000 / 994 / 5,794 train/val/test split")
    coco_karpathy: Path | None = Field(None, description="Karpathy split JSON (dataset_coco.json)")
    coco_images: Path | None = Field(None, description="COCO image root holding train2014/ val2014/ (captions)")
    coco_instances: Path | None = Field(None, description="COCO instances_*.json for detection evaluation")
    coco_instances_train: Path | None = Field(None, description="COCO instances_*.json to train detection on "
                                              "(GLIP; e.g. instances_train2017.json)")
    visual_genome: Path | None = Field(None, description="Visual Genome root (region_descriptions.json, ...)")
    odinw: Path | None = Field(None, description="one ODinW dataset's folder (e.g. odinw/AerialMaritimeDrone/large) "
                               "holding train/ and test/, each a COCO JSON and its images (GLIP's transfer)")
    web_captions: Path | None = Field(None, description="web image-text pairs for BLIP, a JSON list of {image, "
                                      "caption} (BLIP's pre-training annotation format)")
    web_images: Path | None = Field(None, description="the folder the web_captions image paths start from "
                                    "(null = the JSON's folder)")
