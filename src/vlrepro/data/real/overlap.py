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

The same names let a training set built from several datasets count a photo once
(:func:`shared_image_numbers`): AMC's pre-training phase pairs COCO captions with VG region descriptions,
and a COCO photo's captions must not be contrastive negatives of its own VG regions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from vlrepro.data.records import Record, Split

SOURCES = {"coco": ("refcoco", "refcoco+", "refcocog", "coco_karpathy", "coco_instances"),
           "flickr": ("flickr30k_entities",)}  # fmt: skip


def _keys(record: Record, dataset: str | None) -> set[tuple[str, str]]:
    """The names of ``record``'s image: ``(source, image_id)`` for a dataset of ``SOURCES``, and the COCO /
    Flickr ids that a VG record keeps in its meta."""
    own = {(source, str(record.image_id)) for source, datasets in SOURCES.items() if dataset in datasets}
    return own | {(source, str(record.meta[f"{source}_id"])) for source in SOURCES if f"{source}_id" in record.meta}


def image_keys(split: Split) -> set[tuple[str, str]]:
    """The names of every image of ``split`` (empty for a dataset whose images no other shares)."""
    return set().union(*(_keys(r, split.meta.get("dataset")) for r in split.records))


def shared_image_numbers(splits: Sequence[Split]) -> list[dict[int | str, int]]:
    """Per split, a number for each of its images (keyed by ``Record.image``), counted across ``splits``: a
    photo that several of them hold (a COCO image in COCO captions and in VG) gets one number, any other
    image (every world image) a number of its own."""
    number_of: dict[tuple[str, str], int] = {}
    numbers: list[dict[int | str, int]] = []
    count = 0
    for split in splits:
        own: dict[int | str, int] = {}
        for r in split.records:
            if r.image in own:
                continue
            keys = _keys(r, split.meta.get("dataset"))
            known = [number_of[k] for k in keys if k in number_of]
            # Two earlier numbers for one photo would need two datasets that share it only through a third (a
            # VG image that is both a COCO and a Flickr30k photo, met after both); the smaller is kept then.
            own[r.image] = min(known) if known else count
            count += not known
            number_of.update(dict.fromkeys(keys, own[r.image]))
        numbers.append(own)
    return numbers


def without_images_of(train: Split, held_out: Iterable[Split]) -> Split:
    """``train`` without the records whose image is one of ``held_out``'s; ``meta["held_out_images"]`` counts
    the images and records left out (both 0 when nothing overlaps)."""
    banned = set().union(*(image_keys(s) for s in held_out))
    keep, dropped = [], []
    for r in train.records:
        (dropped if _keys(r, train.meta.get("dataset")) & banned else keep).append(r)
    counts = {"images": len({r.image_id for r in dropped}), "records": len(dropped)}
    return Split(keep, train.images, train.instances, {**train.meta, "held_out_images": counts})
