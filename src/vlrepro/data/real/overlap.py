"""Training records whose image an evaluation also scores, left out.

Visual Genome's images are Flickr photos, about half of its 108k of them COCO images (RefCOCO/+/g's val and
test images and COCO's val2017 among them); its ``flickr_id`` is the Flickr photo id, which also names
Flickr30k's images, so Flickr30k Entities' test images can be among them too. Trained on VG regions,
AMC would see the boxes of the images its pointing game scores, and GLIP the novel objects of its zero-shot
test images. MDETR's curated grounding data (which GLIP trains on) drops such images; so does
:func:`without_images_of`, for the box-supervised training of AMC and GLIP. AMC's ALBEF pre-training phase
(`amc_pretrain`, texts without boxes) keeps them, as ALBEF's own pre-training on COCO and VG did.

An image is named by its source and that source's id: ``("coco", id)`` for RefCOCO/+/g and the COCO
adapters (their ``image_id`` is the COCO id), ``("flickr", id)`` for Flickr30k Entities, and a VG record's
``coco_id`` / ``flickr_id`` (kept by ``vlrepro.data.real.visual_genome``). Splits of other datasets (the
world, CUB, ReferIt) name no shared image and leave the training set as it is.
"""

from __future__ import annotations

from collections.abc import Iterable

from vlrepro.data.records import Record, Split

SOURCES = {"coco": ("refcoco", "refcoco+", "refcocog", "coco_karpathy", "coco_instances"),
           "flickr": ("flickr30k_entities",)}  # fmt: skip


def image_keys(split: Split) -> set[tuple[str, str]]:
    """``(source, id)`` of every image of ``split`` (empty for a dataset whose images no other shares)."""
    dataset = split.meta.get("dataset")
    for source, datasets in SOURCES.items():
        if dataset in datasets:
            return {(source, str(r.image_id)) for r in split.records}
    return set()


def _shared(record: Record) -> set[tuple[str, str]]:
    return {(source, str(record.meta[f"{source}_id"])) for source in SOURCES if f"{source}_id" in record.meta}


def without_images_of(train: Split, held_out: Iterable[Split]) -> Split:
    """``train`` without the records whose image is one of ``held_out``'s; ``meta["held_out_images"]`` counts
    the images and records left out (both 0 when nothing overlaps)."""
    banned = set().union(*(image_keys(s) for s in held_out))
    keep, dropped = [], []
    for r in train.records:
        (dropped if _shared(r) & banned else keep).append(r)
    counts = {"images": len({r.image_id for r in dropped}), "records": len(dropped)}
    return Split(keep, train.images, train.instances, {**train.meta, "held_out_images": counts})
