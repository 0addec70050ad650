"""The one error type of the real-dataset adapters, and the checks that raise it with a uniform message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

README_HINT = 'see README "Real datasets"'


class DatasetError(ValueError):
    """A dataset file is missing or not in the expected format.

    The message names the file and what was expected, so that a user can fix the data without reading code.
    """


def require_file(path: Path, expected: str, name: str | None = None) -> Path:
    """``path`` if it is a file, else a ``DatasetError``: ``<name>: missing; expected <expected> (...)``.

    ``name`` is how the message calls the file (default: its base name).
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{name or path.name}: missing; expected {expected} ({README_HINT})")
    return path


def require_dir(path: Path, expected: str) -> Path:
    """``path`` if it is a folder, else a ``DatasetError`` like :func:`require_file`'s."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path.name}/: missing; expected {expected} ({README_HINT})")
    return path


def read_json(path: Path, expected: str) -> Any:
    """Parse a JSON file; missing or invalid JSON is a ``DatasetError`` naming the file."""
    require_file(path, expected)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{Path(path).name}: not valid JSON ({e}); expected {expected}") from e


def image_size(path: Path, listed_in: str) -> tuple[int, int]:
    """(width, height) from the image header; a missing or unreadable image is a ``DatasetError``."""
    try:
        with Image.open(path) as im:  # reads the header only
            return im.size
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing image listed in {listed_in}") from None
    except OSError as e:
        raise DatasetError(f"{path}: not a readable image ({e})") from None
