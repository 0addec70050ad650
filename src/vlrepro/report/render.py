"""Write one list of report blocks twice: as Markdown (REPORT.md) and as self-contained HTML (report.html).

Building the content once keeps the two files from drifting apart. Text may use `code` spans and
nothing else, so the HTML side needs no Markdown parser. Tables are DataFrames of ready-formatted strings.
The HTML page opens with a table of contents (``<nav id="toc">``) of its level-2 headings, each heading
carries an ``id`` made from its text, and a table may carry an ``id`` of its own (the summary: ``summary-table``).
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
    id: str | None = None  # HTML id, for readers' links and for tests


@dataclass(frozen=True)
class Image:
    path: str  # where the PNG is written, relative to the report (Markdown links to it; HTML embeds it)
    png: bytes
    alt: str


Block = Heading | Text | Bullets | Table | Image

_CODE = re.compile(r"`([^`]+)`")

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 80rem; margin: 2rem auto; padding: 0 1rem; color: #222;
       line-height: 1.45; }
h2 { border-top: 2px solid #ddd; padding-top: 1rem; margin-top: 2.5rem; }
nav#toc { background: #f7f7f7; border: 1px solid #ddd; padding: 0.5rem 1.5rem; display: inline-block; }
nav#toc ol { margin: 0.3rem 0; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.85rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: left; vertical-align: top; }
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


def anchors(blocks: Iterable[Block]) -> dict[int, str]:
    """Heading position → a unique HTML id made from its text ('Stage `amc`' → 'stage-amc')."""
    ids: dict[int, str] = {}
    for i, b in enumerate(blocks):
        if isinstance(b, Heading):
            base = re.sub(r"[^a-z0-9]+", "-", b.text.lower()).strip("-") or "section"
            anchor, k = base, 2
            while anchor in ids.values():
                anchor, k = f"{base}-{k}", k + 1
            ids[i] = anchor
    return ids


def to_html(blocks: Iterable[Block], title: str) -> str:
    blocks = list(blocks)
    ids = anchors(blocks)
    toc = "".join(
        f'<li><a href="#{ids[i]}">{_inline(b.text)}</a></li>'
        for i, b in enumerate(blocks)
        if isinstance(b, Heading) and b.level == 2
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        '<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>",
        "<body>",
    ]
    for i, b in enumerate(blocks):
        if isinstance(b, Heading):
            parts.append(f'<h{b.level} id="{ids[i]}">{_inline(b.text)}</h{b.level}>')
            if b.level == 1 and toc:
                parts.append(f'<nav id="toc"><strong>Contents</strong><ol>{toc}</ol></nav>')
        elif isinstance(b, Text):
            parts.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Bullets):
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            cells = b.frame.map(lambda v: _inline(str(v)))  # escaped here, `code` spans kept
            cells.columns = [_inline(str(c)) for c in b.frame.columns]
            table = cells.to_html(index=False, border=0, escape=False, table_id=b.id)
            parts.append(f'<div class="scroll">{table}</div>')
        else:
            data = base64.b64encode(b.png).decode("ascii")
            parts.append(f'<figure><img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}"></figure>')
    parts += ["</body>", "</html>"]
    return "\n".join(parts) + "\n"
