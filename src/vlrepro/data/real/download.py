"""Optional downloads of the datasets that have a stable official URL; nothing runs unless called.

    python -m vlrepro.data.real.download list
    python -m vlrepro.data.real.download cub cub_segmentations --dest DIR

A download streams to ``<dest>.part``, resumes it with an HTTP Range request when the server allows
(206; a 200 answer restarts from zero), checks the checksum when one is known, and only then renames the
file to ``dest``: a ``dest`` on disk is always complete. ``extract`` unpacks .tar.gz/.tgz/.tar/.zip and
refuses an archive with a member that would land outside the destination.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
import tarfile
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from vlrepro.data.real.errors import DatasetError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    """A file with a stable official URL; ``md5``/``sha256`` None means the checksum is unknown to us."""

    url: str
    filename: str
    setting: str  # which data.real key to set after extraction, relative to --dest
    md5: str | None = None
    sha256: str | None = None


# Checksums only where we are sure. CUB_200_2011.tgz: the MD5 that the widely used CUB loaders have checked
# since the dataset's release, also against this CaltechDATA file (not re-verified from here: no network).
# The others are unknown here and stay None: the download then reports the SHA-256 of what arrived.
REGISTRY: dict[str, Archive] = {
    "cub": Archive(
        "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
        "CUB_200_2011.tgz", "data.real.cub = DEST/CUB_200_2011", md5="97eceeb196236b17998738112f37df78"),
    "cub_segmentations": Archive(
        "https://data.caltech.edu/records/w9d68-gec53/files/segmentations.tgz?download=1",
        "segmentations.tgz", "data.real.cub_segmentations = DEST/segmentations"),
    "coco_karpathy": Archive(
        "http://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip",
        "caption_datasets.zip", "data.real.coco_karpathy = DEST/dataset_coco.json"),
    "coco_annotations2014": Archive(
        "http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
        "annotations_trainval2014.zip", "data.real.coco_instances = DEST/annotations/instances_val2014.json"),
    "coco_train2014": Archive(
        "http://images.cocodataset.org/zips/train2014.zip", "train2014.zip", "data.real.coco_images = DEST"),
    "coco_val2014": Archive(
        "http://images.cocodataset.org/zips/val2014.zip", "val2014.zip", "data.real.coco_images = DEST"),
}


def download(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    md5: str | None = None,
    resume: bool = True,
    *,
    timeout: float = 60.0,
    progress: bool = True,
) -> Path:
    """Download ``url`` to ``dest`` (see the module doc); returns ``dest``.

    A ``dest`` that already exists is checked against the given checksums and kept. A checksum mismatch
    deletes the ``.part`` file and raises ``DatasetError`` naming the file and both digests. A network
    error leaves the ``.part`` file for the next call to resume.
    """
    dest = Path(dest)
    if dest.exists():
        if sha256 is not None or md5 is not None:
            _verify(dest, _hashes(dest, sha256, md5), sha256, md5, part=None)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if part.exists() and not resume:
        part.unlink()
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code != 416 or not offset:
            raise
        # 416: nothing left after `offset`; the part is complete if its size is the server's total
        total = _total_from_content_range(e.headers.get("Content-Range", ""))
        e.close()
        if total != offset:
            part.unlink()
            return download(url, dest, sha256, md5, resume=False, timeout=timeout, progress=progress)
        hashes = _hashes(part, sha256, md5)
    else:
        with response:
            if offset and response.status == 206:
                if not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                    raise DatasetError(f"{url}: asked for bytes {offset}- and got "
                                       f"Content-Range {response.headers.get('Content-Range')!r}")
                hashes = _hashes(part, sha256, md5)  # the bytes already there count towards the digest
                mode = "ab"
            else:  # 200: the server ignored the Range header, so start over
                offset = 0
                hashes = _new_hashes(sha256, md5)
                mode = "wb"
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length is not None else None
            received = offset
            with part.open(mode) as f, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                            unit_divisor=1024, desc=dest.name, disable=not progress) as bar:
                try:
                    while chunk := response.read(CHUNK):
                        f.write(chunk)
                        for h in hashes.values():
                            h.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
                except OSError as e:
                    e.add_note(f"{part} is kept ({received} bytes); call download again to resume")
                    raise
            if total is not None and received != total:
                raise OSError(f"{url}: connection closed after {received} of {total} bytes; "
                              f"{part} is kept, call again to resume")
    _verify(dest, hashes, sha256, md5, part=part)
    if sha256 is None and md5 is None:
        warnings.warn(f"{dest}: checksum unknown, not verified; its sha256 is {hashes['sha256'].hexdigest()}",
                      stacklevel=2)
    os.replace(part, dest)
    return dest


def extract(archive: str | Path, dest_dir: str | Path) -> Path:
    """Unpack a .tar.gz/.tgz/.tar/.zip into ``dest_dir``; refuses (before writing anything) an archive with a
    member whose path or link target would leave ``dest_dir`` (path traversal), or with a device file."""
    archive, dest_dir = Path(archive), Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = archive.name.lower()
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for m in members:
                _check_inside(archive, dest_dir, m.name)
                if m.issym() or m.islnk():
                    # a symlink's target is relative to its own folder, a hard link's to the archive root
                    target = str(PurePosixPath(m.name).parent / m.linkname) if m.issym() else m.linkname
                    _check_inside(archive, dest_dir, target, what=f"link {m.name!r} -> {m.linkname!r}")
                elif m.isdev():
                    raise DatasetError(f"{archive}: member {m.name!r} is a device file; refusing to extract")
            tar.extractall(dest_dir, members=members, filter="data")
    elif name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for n in zf.namelist():
                _check_inside(archive, dest_dir, n)
            zf.extractall(dest_dir)
    else:
        raise DatasetError(f"{archive}: unknown archive type; expected .tar.gz, .tgz, .tar or .zip")
    return dest_dir


def _check_inside(archive: Path, dest_dir: Path, member: str, what: str | None = None) -> None:
    root = dest_dir.resolve()
    target = (root / member).resolve()
    if member.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", member) or not target.is_relative_to(root):
        raise DatasetError(f"{archive}: {what or f'member {member!r}'} would be written outside {dest_dir}; "
                           "refusing to extract (path traversal)")


def _new_hashes(sha256: str | None, md5: str | None) -> dict[str, Any]:
    # Always compute SHA-256, so that an unverified download can report what arrived.
    hashes = {"sha256": hashlib.sha256()}
    if md5 is not None:
        hashes["md5"] = hashlib.md5()
    return hashes


def _hashes(path: Path, sha256: str | None, md5: str | None) -> dict[str, Any]:
    hashes = _new_hashes(sha256, md5)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            for h in hashes.values():
                h.update(chunk)
    return hashes


def _verify(dest: Path, hashes: dict[str, Any], sha256: str | None, md5: str | None,
            part: Path | None) -> None:
    for kind, expected in (("sha256", sha256), ("md5", md5)):
        if expected is None:
            continue
        got = hashes[kind].hexdigest()
        if got != expected.lower():
            if part is not None:
                part.unlink(missing_ok=True)
                fate = f"deleted {part.name}"
            else:
                fate = "delete it and download again"
            raise DatasetError(f"{dest}: {kind} mismatch: expected {expected.lower()}, got {got}; {fate}")


def _total_from_content_range(value: str) -> int | None:
    m = re.search(r"/(\d+)\s*$", value)
    return int(m.group(1)) if m else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlrepro.data.real.download", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="+", help=f"'list', or archive names: {', '.join(REGISTRY)}")
    parser.add_argument("--dest", type=Path, help="folder to download into and extract in")
    parser.add_argument("--no-extract", action="store_true", help="keep the archive packed")
    parser.add_argument("--no-resume", action="store_true", help="discard a partial download")
    args = parser.parse_args(argv)
    if args.names == ["list"]:
        for name, a in REGISTRY.items():
            checksum = f"md5 {a.md5}" if a.md5 else f"sha256 {a.sha256}" if a.sha256 else "checksum unknown"
            print(f"{name:22s} {a.url}  ({checksum}; then {a.setting})")
        return 0
    unknown = [n for n in args.names if n not in REGISTRY]
    if unknown:
        parser.error(f"unknown archive(s) {unknown}; known: {', '.join(REGISTRY)}")
    if args.dest is None:
        parser.error("--dest is required")
    for name in args.names:
        a = REGISTRY[name]
        if a.md5 is None and a.sha256 is None:
            print(f"{name}: checksum unknown; the download is not verified", file=sys.stderr)
        path = download(a.url, args.dest / a.filename, sha256=a.sha256, md5=a.md5, resume=not args.no_resume)
        if not args.no_extract:
            extract(path, args.dest)
        print(f"{name}: done; set {a.setting.replace('DEST', str(args.dest))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
