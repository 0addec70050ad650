"""Flickr30k Entities adapter on a small fixture in the dataset's Sentences/ + Annotations/ format."""

from __future__ import annotations

import re

import pytest

from vlrepro.data.real.config import RealDataConfig
from vlrepro.data.real.errors import DatasetError
from vlrepro.data.real.flickr30k import flickr30k_entities_from_config, load_flickr30k_entities, parse_caption
from vlrepro.data.records import load_split, save_split

SENTENCES = {
    "1000": [
        "[/EN#18/people A man] in [/EN#19/clothing an orange hat] looks at [/EN#0/notvisual something] .",
        "[/EN#20/people Two  dogs] play with [/EN#21/other/bodyparts a ball] near [/EN#24/scene the park] .",
        "[/EN#23/people Someone] watches [/EN#22/animals the pet] .",
    ],
    "2000": ["[/EN#5/people A child] runs ."],
}

BOX = "<bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox>"


def _object(names, body):
    return "<object>" + "".join(f"<name>{n}</name>" for n in names) + body + "</object>"


ANNOTATIONS = {
    "1000": (500, 333, [
        _object(["18"], BOX.format(1, 1, 100, 200)),
        _object(["19"], BOX.format(41, 11, 60, 30)),
        _object(["20"], BOX.format(201, 101, 250, 150)),
        _object(["20"], BOX.format(301, 101, 520, 340)),  # sticks out of the 500x333 image
        _object(["21", "22"], BOX.format(11, 21, 30, 40)),  # one box for two entities
        _object(["23"], "<nobndbox>1</nobndbox><scene>0</scene>"),
        _object(["24"], "<nobndbox>0</nobndbox><scene>1</scene>"),
        _object(["25"], BOX.format(600, 5, 610, 9)),  # wholly outside: dropped
    ]),
    "2000": (200, 100, [_object(["5"], BOX.format(1, 1, 1, 1))]),
}


def _xml(image_id, width, height, objects):
    return (f"<annotation><filename>{image_id}.jpg</filename><size><width>{width}</width><height>{height}</height>"
            f"<depth>3</depth></size>{''.join(objects)}</annotation>")


def write_flickr(root, sentences=SENTENCES, annotations=ANNOTATIONS, splits=None):
    splits = splits or {"train": ["1000"], "val": ["2000"], "test": []}
    (root / "Sentences").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    for image_id, lines in sentences.items():
        (root / "Sentences" / f"{image_id}.txt").write_text("\n".join(lines) + "\n")
    for image_id, (w, h, objects) in annotations.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(_xml(image_id, w, h, objects))
    for name, ids in splits.items():
        (root / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def test_caption_text_and_phrase_spans():
    cap = parse_caption(SENTENCES["1000"][0], "x")
    assert cap.text == "A man in an orange hat looks at something ."
    assert [cap.text[p.start : p.end] for p in cap.phrases] == ["A man", "an orange hat", "something"]
    assert [(p.entity, p.types) for p in cap.phrases] == [("18", ("people",)), ("19", ("clothing",)),
                                                          ("0", ("notvisual",))]
    multi = parse_caption("a [/EN#3/other/bodyparts  left   hand] .", "x")
    assert multi.text == "a left hand ." and multi.phrases[0].types == ("other", "bodyparts")
    assert multi.text[multi.phrases[0].start : multi.phrases[0].end] == "left hand"


def test_records_boxes_and_links(tmp_path):
    splits = load_flickr30k_entities(write_flickr(tmp_path), image_root=tmp_path / "flickr30k-images")
    assert sorted(splits) == ["test", "train", "val"]
    train = splits["train"]
    assert len(train.records) == 3 and len(splits["test"].records) == 0
    r0 = train.records[0]
    assert (r0.image_id, r0.image, r0.width, r0.height) == ("1000", "1000.jpg", 500, 333)
    # 1-based inclusive (1, 1, 100, 200) -> 0-based exclusive (0, 0, 100, 200); (41, 11, 60, 30) -> (40, 10, 60, 30)
    assert r0.boxes == ((0.0, 0.0, 100.0, 200.0), (40.0, 10.0, 60.0, 30.0))
    assert [(r0.phrase_text(i), p.box_ids) for i, p in enumerate(r0.phrases)] == [("A man", (0,)),
                                                                                   ("an orange hat", (1,))]
    assert r0.meta["n_phrases"] == 3 and r0.meta["n_phrases_without_box"] == 1
    assert r0.meta["without_box"] == {"notvisual": 1}
    assert r0.meta["entity_ids"] == ["18", "19"] and r0.meta["phrase_types"] == [["people"], ["clothing"]]

    r1 = train.records[1]
    assert r1.text == "Two dogs play with a ball near the park ."
    # entity 20 has two <object>s, the second clipped to the image (520 -> 500, 340 -> 333)
    assert r1.phrase_text(0) == "Two dogs" and r1.phrases[0].box_ids == (0, 1)
    assert r1.boxes[:2] == ((200.0, 100.0, 250.0, 150.0), (300.0, 100.0, 500.0, 333.0))
    assert r1.phrase_text(1) == "a ball" and r1.boxes[r1.phrases[1].box_ids[0]] == (10.0, 20.0, 30.0, 40.0)
    assert r1.meta["without_box"] == {"scene": 1} and r1.meta["sent_index"] == 1

    # the object named "21" and "22" serves entity 22 too; entity 23 is <nobndbox>
    r2 = train.records[2]
    assert [r2.phrase_text(i) for i in range(len(r2.phrases))] == ["the pet"]
    assert r2.boxes == ((10.0, 20.0, 30.0, 40.0),) and r2.meta["without_box"] == {"nobox": 1}

    assert train.meta["n_phrases"] == 8 and train.meta["n_phrases_without_box"] == 3
    assert train.meta["without_box"] == {"notvisual": 1, "scene": 1, "nobox": 1}
    assert train.meta["dropped_boxes"] == 1
    assert train.meta["image_root"] == str(tmp_path / "flickr30k-images")

    save_split(tmp_path / "saved", train)
    again = load_split(tmp_path / "saved")
    assert again.records == train.records and again.meta == train.meta

    # a one-pixel box (1, 1, 1, 1) is the pixel at (0, 0): (0, 0, 1, 1)
    assert splits["val"].records[0].boxes == ((0.0, 0.0, 1.0, 1.0),)


def test_only_requested_splits_and_config(tmp_path):
    write_flickr(tmp_path)
    cfg = RealDataConfig(flickr30k_entities=tmp_path, flickr30k_images=tmp_path / "imgs")
    splits = flickr30k_entities_from_config(cfg, splits=("val",))
    assert list(splits) == ["val"] and splits["val"].meta["image_root"] == str(tmp_path / "imgs")
    with pytest.raises(DatasetError, match="data.real.flickr30k_entities is not set"):
        flickr30k_entities_from_config(RealDataConfig())


def test_missing_xmax_is_named(tmp_path):
    bad = {"2000": (200, 100, [_object(["5"], "<bndbox><xmin>1</xmin><ymin>1</ymin><ymax>4</ymax></bndbox>")])}
    write_flickr(tmp_path, annotations={**ANNOTATIONS, **bad})
    xml = re.escape(str(tmp_path / "Annotations" / "2000.xml"))
    with pytest.raises(DatasetError, match=rf"^{xml}: <bndbox> without <xmax>$"):
        load_flickr30k_entities(tmp_path)


@pytest.mark.parametrize(
    ("xml", "pattern"),
    [
        ("<annotation><size><width>5", r"Annotations/2000\.xml: not valid XML"),
        ("<annotation></annotation>", r"Annotations/2000\.xml: no <size>"),
        (_xml("2000", "wide", 100, []), r"Annotations/2000\.xml: <width> 'wide' in <size> is not a number"),
        (_xml("2000", 200, 100, [_object([], BOX.format(1, 1, 2, 2))]), r"<object> 0 without a <name>"),
    ],
)
def test_malformed_xml_is_named(tmp_path, xml, pattern):
    write_flickr(tmp_path)
    (tmp_path / "Annotations" / "2000.xml").write_text(xml)
    with pytest.raises(DatasetError, match=pattern):
        load_flickr30k_entities(tmp_path)


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ("[/EN#5/people A child runs .", r"Sentences/2000\.txt line 1: phrase \[/EN#5\.\.\. is not closed"),
        ("[EN#5 A child] runs .", r"Sentences/2000\.txt line 1: '\[EN#5' is not a phrase header"),
        ("[/EN#5/people ] runs .", r"Sentences/2000\.txt line 1: phrase \[/EN#5/\.\.\. has no words"),
    ],
)
def test_malformed_sentences_are_named(tmp_path, line, pattern):
    write_flickr(tmp_path, sentences={**SENTENCES, "2000": [line]})
    with pytest.raises(DatasetError, match=pattern):
        load_flickr30k_entities(tmp_path)


def test_missing_files_are_named(tmp_path):
    write_flickr(tmp_path, splits={"train": ["1000", "3000"], "val": [], "test": []})
    xml = re.escape(str(tmp_path / "Annotations" / "3000.xml"))
    with pytest.raises(DatasetError, match=rf"^{xml}: missing; expected .*Annotations/.*Real datasets"):
        load_flickr30k_entities(tmp_path, splits=("train",))
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(tmp_path / 'nope.txt'))}: missing"):
        load_flickr30k_entities(tmp_path, splits=("nope",))
    (tmp_path / "val.txt").write_text("2000\n20x0\n")
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(tmp_path / 'val.txt'))} line 2: '20x0' is not a Flickr"):
        load_flickr30k_entities(tmp_path, splits=("val",))
    with pytest.raises(DatasetError, match=rf"^{re.escape(str(tmp_path / 'elsewhere' / 'Sentences'))}/: missing"):
        load_flickr30k_entities(tmp_path / "elsewhere")
