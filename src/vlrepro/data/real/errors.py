"""Checked readers of dataset files, and ``DatasetError``, the one error type of the real-dataset adapters.

Most of this module is the readers every adapter shares (a required file or folder, a JSON file, an image
header, the keys of a JSON object); each turns a missing or malformed input into a ``DatasetError`` with
the message format below. (The module keeps its name ``errors`` because the adapters and tests import
``DatasetError`` from here.)

Message format, the same in every adapter::

    <full path>[: <place in the file>]: <problem>[; expected <what>][ (see README "Real datasets")]
    data.real.<key> is not set; point it at <what> (see README "Real datasets")

The path is the full path as given, not only the file's base name: a user with several copies of a
dataset (a scratch disk, a shared folder) must see which one is broken. The README hint ends the
messages whose fix is to get or point at data (a missing file or folder, an unset ``data.real`` key);
a malformed file names what was expected instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image

README_HINT = 'see README "Real datasets"'


class DatasetError(ValueError):
    """A dataset file is missing or not in the expected format.

    The message names the file and what was expected, so that a user can fix the data without reading code.
    """

    def __init__(self, message: str) -> None:
        # A DataLoader worker's error reaches the training process as a new one, whose message is the worker's
        # whole traceback; the stages print only the message, which is its last line.
        if message.startswith(f"Caught {type(self).__name__} in DataLoader worker"):
            message = message.rstrip().rsplit(f"{type(self).__name__}: ", 1)[-1]
        super().__init__(message)


def missing(path: Path | str, expected: str) -> DatasetError:
    """The error for a missing file or folder: ``<path>: missing; expected <expected> (see README ...)``."""
    return DatasetError(f"{path}: missing; expected {expected} ({README_HINT})")


def not_set(key: str, expected: str) -> DatasetError:
    """The error for an unset ``data.real.<key>``: ``data.real.<key> is not set; point it at <expected> ...``."""
    return DatasetError(f"data.real.{key} is not set; point it at {expected} ({README_HINT})")


def require_file(path: Path, expected: str) -> Path:
    """``path`` if it is a file, else the :func:`missing` error."""
    path = Path(path)
    if not path.is_file():
        raise missing(path, expected)
    return path


def require_dir(path: Path, expected: str) -> Path:
    """``path`` if it is a folder, else the :func:`missing` error (the path shown with a trailing ``/``)."""
    path = Path(path)
    if not path.is_dir():
        raise missing(f"{path}/", expected)
    return path


def require_keys(obj: Any, keys: Sequence[str], where: str) -> None:
    """Check that ``obj`` is a JSON object with ``keys``; ``where`` is ``<path>: <place>`` for the message."""
    if not isinstance(obj, dict):
        raise DatasetError(f"{where}: expected an object with keys {list(keys)}, got {type(obj).__name__}")
    absent = [k for k in keys if k not in obj]
    if absent:
        raise DatasetError(f"{where}: missing key(s) {absent}; expected {list(keys)}")


def read_json(path: Path, expected: str) -> Any:
    """Parse a JSON file; missing or invalid JSON is a ``DatasetError`` naming the file."""
    require_file(path, expected)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e}); expected {expected}") from e


def image_size(path: Path, listed_in: str) -> tuple[int, int]:
    """(width, height) from the image header; a missing or unreadable image is a ``DatasetError``."""
    try:
        with Image.open(path) as im:  # reads the header only
            return im.size
    except FileNotFoundError:
        raise missing(path, f"the image listed in {listed_in}") from None
    except OSError as e:
        raise DatasetError(f"{path}: not a readable image ({e})") from None
