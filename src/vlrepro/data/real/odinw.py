"""One ODinW (Object Detection in the Wild) dataset, as GLIP's repository lays them out, for GLIP's transfer.

On disk, one folder per dataset (e.g. ``odinw/AerialMaritimeDrone/large``)::

    <odinw>/train/<annotations>.json  + the images it names     (COCO instances format)
    <odinw>/test/<annotations>.json   + the images it names

``<annotations>`` is ``annotations_without_background.json`` where the set has it (GLIP's configs read
that file: the Roboflow export's extra category 0, named after the dataset, is left out), else
``_annotations.coco.json``. Each split is read by ``vlrepro.data.real.coco.load_coco_instances``, its images
under the split's folder; the ``valid`` split is not used (k-shot training images come from ``train``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vlrepro.data.real.coco import load_coco_instances
from vlrepro.data.real.errors import missing, not_set
from vlrepro.data.records import Split

if TYPE_CHECKING:
    from vlrepro.data.real.config import RealDataConfig

ANNOTATIONS = ("annotations_without_background.json", "_annotations.coco.json")  # in order of preference
SPLITS = ("train", "test")


def load_odinw(root: str | Path) -> dict[str, Split]:
    """``{"train", "test"}`` detection splits of the ODinW dataset in ``root``."""
    root = Path(root)
    out = {}
    for name in SPLITS:
        folder = root / name
        found = [folder / f for f in ANNOTATIONS if (folder / f).is_file()]
        if not found:
            names = " or ".join(ANNOTATIONS)
            raise missing(folder / ANNOTATIONS[0], f"the {name} annotations of an ODinW dataset ({names} in "
                          f"{folder}/, COCO instances format)")  # fmt: skip
        split = load_coco_instances(found[0], folder, subset="")
        out[name] = Split(split.records, meta={**split.meta, "dataset": "odinw", "split": name})
    return out


def odinw_from_config(cfg: RealDataConfig) -> dict[str, Split]:
    """``load_odinw`` with ``data.real.odinw``."""
    if cfg.odinw is None:
        raise not_set("odinw", "one ODinW dataset's folder holding train/ and test/ (COCO JSON + images)")
    return load_odinw(cfg.odinw)
