"""Write one list of report blocks twice: as Markdown (REPORT.md) and as self-contained HTML (report.html).

Building the content once keeps the two files from drifting apart. Text may use `code` spans and
nothing else, so the HTML side needs no Markdown parser. Tables are DataFrames of ready-formatted strings.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Table:
    frame: pd.DataFrame


@dataclass(frozen=True)
class Image:
    path: str  # where the PNG is written, relative to the report (Markdown links to it; HTML embeds it)
    png: bytes
    alt: str


Block = Heading | Text | Bullets | Table | Image

_CODE = re.compile(r"`([^`]+)`")

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; }
code { background: #f3f3f3; padding: 0 0.2rem; }
img { max-width: 100%; }
"""


def to_markdown(blocks: Iterable[Block]) -> str:
    parts: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Text):
            parts.append(b.text)
        elif isinstance(b, Bullets):
            parts.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Table):
            # numparse off: cells are already formatted and tabulate must not re-round them
            frame = b.frame.map(lambda s: str(s).replace("|", "\\|"))
            parts.append(frame.to_markdown(index=False, disable_numparse=True))
        else:
            parts.append(f"![{b.alt}]({b.path})")
    return "\n\n".join(parts) + "\n"


def _inline(text: str) -> str:
    return _CODE.sub(r"<code>\1</code>", html.escape(text))


def to_html(blocks: Iterable[Block], title: str) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        f'<head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{_CSS}</style></head>',
        "<body>",
    ]
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Text):
            parts.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            parts.append(b.frame.to_html(index=False, border=0, escape=True))
        else:
            data = base64.b64encode(b.png).decode("ascii")
            parts.append(f'<figure><img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}"></figure>')
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
