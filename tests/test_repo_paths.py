"""The repository stands alone: no text file points outside it, and the repository paths it names exist.

Scanned: every text file git would put in the next commit (tracked, plus untracked files that are not
ignored), except papermill's in-flight copies ``reports/notebooks/.<name>.running.ipynb`` and this file
(whose checks of the checker hold bad paths on purpose).

1. **No path outside the repository.** A ``shared/`` path that is not a sub-folder of a repository path
   (``shared/papers/x.md``, ``../shared/x``, ``/somewhere/shared/x``: the checkout's sibling folder), an
   absolute path into the checkout's parent folder other than the checkout itself (not looked for in
   pipeline outputs, which record the absolute paths of the checkout that wrote them), or a ``../`` path (in
   backticks or a markdown link) that climbs above the repository root from the file's folder.
2. **Repository paths exist.** A path in backticks (markdown inline code, or a Python docstring's
   double-backtick literal), or the target of a markdown link, that starts with ``src/``, ``docs/``,
   ``notebooks/``, ``tests/``, ``benchmarks/`` or ``reports/``, must exist in the working tree or be an
   output ``dvc.yaml`` declares (a stage writes it: ``reports/gates.csv``). Relative markdown links
   (``../../README.md``) resolve from the linking file's folder and must exist too. Paths with placeholders
   (``<variant>``, ``${item.seed}``, ``*``, ``{a,b}``, ``…``) name a family of files and are skipped. In
   notebooks only the cells' sources are read for these paths (outputs are generated text).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

PREFIXES = ("src/", "docs/", "notebooks/", "tests/", "benchmarks/", "reports/")
BINARY_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".npz", ".npy", ".pt", ".pth", ".safetensors", ".pdf", ".zip"}
SKIP_NAME = re.compile(r"^\..*\.running\.ipynb$")  # papermill's copy of a notebook while its stage runs
SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()  # this file's examples of bad paths are on purpose

# A "shared/" path at the start of a path: bare, after ../ steps, or at the end of an absolute path. Not when a
# path component precedes it without a leading slash (src/foo/shared/ is a folder of the repository).
SHARED = re.compile(r"(?<![\w.\-/])(?:(?:\.\./)+|/(?:[\w.\-]+/)*)?shared/[\w.\-/]*")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
MD_LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"\n]*\")?\)")
PLACEHOLDER = re.compile(r"[<>{}*$?\[\]…]|\.\.\.")
TRAILING = ".,;:)'\""


@dataclass(frozen=True)
class Problem:
    file: str
    where: str  # "line N" or "cell N"
    text: str
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.where}: {self.text!r}: {self.why}"


def repository_files(root: Path = ROOT) -> list[str]:
    """Tracked files plus untracked, not ignored ones (what the next commit may hold) that exist on disk."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root, capture_output=True, check=True,
    ).stdout.decode()  # fmt: skip
    names = sorted({n for n in out.split("\0") if n})
    return [n for n in names if (root / n).is_file() and not SKIP_NAME.match(Path(n).name) and n != SELF]


def read_text(path: Path) -> str | None:
    """The file's text, or None for a binary file (by suffix, a NUL byte, or not UTF-8)."""
    if path.suffix.lower() in BINARY_SUFFIXES:
        return None
    data = path.read_bytes()
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


@functools.cache
def declared_paths(root: Path = ROOT) -> list[tuple[str, re.Pattern[str]]]:
    """The paths the pipeline writes, as dvc.yaml declares them (stages' outs, metrics and plots, and the
    top-level plots): ``(path, pattern)``, where the pattern reads each ``${...}`` of a matrix stage as one
    file-name part. Dependencies are not included: an input must exist."""
    dvc = root / "dvc.yaml"
    if not dvc.is_file():
        return []
    spec = yaml.safe_load(dvc.read_text()) or {}
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(key)
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, str) and node.startswith(PREFIXES):
            found.add(node.rstrip("/"))

    for stage in (spec.get("stages") or {}).values():
        for key in ("outs", "metrics", "plots"):
            walk(stage.get(key, []))
    walk(spec.get("plots", []))
    return [(p, re.compile("[^/]+".join(re.escape(part) for part in re.split(r"\$\{[^}]*\}", p))))
            for p in sorted(found)]  # fmt: skip


def _is_declared(path: str, declared: list[tuple[str, re.Pattern[str]]]) -> bool:
    """``path`` is a declared path, lies under one, or is a folder above one."""
    path = path.rstrip("/")
    folders = [path[:i] for i, c in enumerate(path) if c == "/"]
    return any(
        pattern.fullmatch(path) or raw.startswith(path + "/") or any(pattern.fullmatch(f) for f in folders)
        for raw, pattern in declared
    )


def _inside(path: str, root: Path) -> bool:
    return os.path.normpath(path) == str(root) or os.path.normpath(path).startswith(str(root) + os.sep)


def _line(text: str, offset: int) -> str:
    return f"line {text.count(chr(10), 0, offset) + 1}"


def outside_paths(name: str, text: str, root: Path = ROOT, siblings: bool = True) -> list[Problem]:
    """Check 1 on the whole text of file ``name`` (repository-relative).

    ``siblings=False`` skips absolute paths into the checkout's parent folder: a pipeline output records the
    absolute paths of the checkout that wrote it (papermill's metadata), which a clone elsewhere would see as
    a sibling; those files are regenerated, and their sources are checked.
    """
    problems = [Problem(name, _line(text, m.start()), m.group(0), "a shared/ folder outside the repository")
                for m in SHARED.finditer(text)]  # fmt: skip
    parent = root.parent
    if siblings and parent != Path(parent.anchor):  # a checkout at /repo has no sibling paths to look for
        # starting at a path boundary: '.dvc/tmp/x' is no absolute path into /tmp for a checkout in /tmp
        sibling = re.compile(r"(?<![\w.\-/])" + re.escape(str(parent)) + r"/(?!" + re.escape(root.name)
                             + r"(?![\w.\-]))[\w.\-/]*")  # fmt: skip
        problems += [Problem(name, _line(text, m.start()), m.group(0), "an absolute path outside the repository")
                     for m in sibling.finditer(text)]  # fmt: skip
    return problems


def _mentions(name: str, text: str) -> list[tuple[str, str, str]]:
    """``(where, kind, token)`` for each inline-code token and markdown link target of the file's prose."""
    if name.endswith(".ipynb"):
        try:
            cells = json.loads(text).get("cells", [])
        except (json.JSONDecodeError, AttributeError):
            return []
        chunks = [(f"cell {i}", "".join(c.get("source", [])), c.get("cell_type") == "markdown")
                  for i, c in enumerate(cells)]  # fmt: skip
    else:
        chunks = [("", text, name.endswith(".md"))]
    found = []
    for where, chunk, markdown in chunks:
        for m in INLINE_CODE.finditer(chunk):
            for token in m.group(1).split():
                found.append((where or _line(chunk, m.start()), "code", token))
        if markdown:
            for m in MD_LINK.finditer(chunk):
                found.append((where or _line(chunk, m.start()), "link", m.group(1)))
    return found


def missing_paths(name: str, text: str, root: Path = ROOT, declared: list[tuple[str, re.Pattern[str]]] | None = None
                  ) -> list[Problem]:  # fmt: skip
    """Check 2 (and check 1's ``../`` escapes) on the inline code and links of file ``name``."""
    declared = declared_paths(root) if declared is None else declared
    here = (root / name).parent
    problems = []
    for where, kind, token in _mentions(name, text):
        token = token.lstrip("(").rstrip(TRAILING)
        if kind == "link":
            if re.match(r"^[a-z][a-z0-9+.\-]*:", token, re.I) or token.startswith("#"):
                continue  # a URL, mailto:, or an anchor in the same page
            token = token.split("#", 1)[0]
        if not token or PLACEHOLDER.search(token):
            continue
        token = re.sub(r":\d+(?::\d+)?$", "", token)  # path:line
        if token.startswith("../") or (kind == "link" and not token.startswith("/")):
            target = os.path.normpath(here / token)
            if not _inside(target, root):
                problems.append(Problem(name, where, token, "a relative path that leaves the repository"))
                continue
            if kind == "link" and not Path(target).exists():
                problems.append(Problem(name, where, token, "a link to a file that does not exist"))
            continue
        relative = token.removeprefix("./")
        if relative.startswith(PREFIXES) and not (root / relative).exists() and not _is_declared(relative, declared):
            problems.append(Problem(name, where, token, "a repository path that does not exist"))
    return problems


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the file list comes from git")
    out = {}
    for name in repository_files():
        text = read_text(ROOT / name)
        if text is not None:
            out[name] = text
    return out


def _report(problems: list[Problem]) -> str:
    return f"{len(problems)} problem(s):\n" + "\n".join(f"  {p}" for p in problems)


# Files that still point outside and are fixed only by re-running their stage (the executed copies are that
# stage's outputs, and editing the notebook alone would leave dvc.lock describing outputs it no longer
# makes). They are checked the other way round below, so the entry must go when the rerun has fixed them.
PENDING_RERUN: dict[str, str] = {}  # path -> the stage whose rerun fixes it


def _outside(texts: dict[str, str]) -> list[Problem]:
    declared = declared_paths()
    problems = [p for name, text in texts.items()
                for p in outside_paths(name, text, siblings=not _is_declared(name, declared))]  # fmt: skip
    problems += [p for name, text in texts.items() for p in missing_paths(name, text)
                 if p.why.startswith("a relative path")]  # fmt: skip
    return problems


def test_no_file_points_outside_the_repository(texts):
    problems = [p for p in _outside(texts) if p.file not in PENDING_RERUN]
    assert not problems, _report(problems)


def test_files_pending_a_rerun_still_need_it(texts):
    """Strict: once a stage's rerun has fixed a file, its PENDING_RERUN entry must be removed."""
    still = {p.file for p in _outside(texts)}
    fixed = sorted(name for name in PENDING_RERUN if name in texts and name not in still)
    assert not fixed, f"no longer pointing outside, remove from PENDING_RERUN: {fixed}"


def test_repository_paths_named_in_files_exist(texts):
    declared = declared_paths()
    problems = [p for name, text in texts.items() for p in missing_paths(name, text, declared=declared)
                if not p.why.startswith("a relative path")]  # fmt: skip
    assert not problems, _report(problems)


def test_the_paper_notes_are_in_the_repository(texts):
    """Each reproduced paper has its notes in docs/papers/, and the README points to every such page."""
    pages = sorted(n for n in texts if n.startswith("docs/papers/") and n.endswith(".md"))
    assert {"docs/papers/amc.md", "docs/papers/smcim.md"} <= set(pages)
    assert [p for p in pages if p not in texts["README.md"]] == [], "pages the README does not point to"


# --- the checker itself, on made-up files ------------------------------------------------------------


@pytest.fixture
def fake_root(tmp_path):
    root = tmp_path / "repo"
    for path in ("src/pkg/mod.py", "docs/papers/amc.md", "notebooks/20_amc.ipynb", "README.md"):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text("")
    (root / "dvc.yaml").write_text(
        "stages:\n  report:\n    deps:\n      - src/pkg\n"  # an input folder: what is under it must exist
        "    outs:\n      - reports/gates.csv:\n          cache: false\n"
        "  run:\n    outs:\n      - reports/runs/${item.variant}-${item.seed}\n"
    )
    return root


@pytest.mark.parametrize(
    "text",
    [
        "see the card `../shared/papers/amc.md`",
        "card: `shared/papers/smcim.md`",
        "transcribed from shared/papers/*.md",
        "notes in /elsewhere/shared/design.md",
        "notes in /srv/team/shared/papers/amc.md",
    ],
)
def test_checker_flags_shared_paths(fake_root, text):
    assert outside_paths("README.md", text, fake_root)


def test_checker_flags_absolute_sibling_paths_but_not_the_checkout(fake_root):
    sibling, inside = f"{fake_root.parent}/notes/amc.md", f"{fake_root}/src/pkg/mod.py"
    assert outside_paths("README.md", f"read {sibling}", fake_root)
    assert not outside_paths("README.md", f"ran {inside}", fake_root)
    assert not outside_paths("README.md", "src/pkg/shared/x.py and vlrepro.models.shared", fake_root)
    # a repository path that ends like the parent folder is not an absolute path: for a checkout in /tmp,
    # '.dvc/tmp/matrix/' holds '/tmp/matrix/'
    assert not outside_paths("README.md", f"logs in `.dvc{fake_root.parent}/matrix/`", fake_root)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("README.md", "the model lives in `src/pkg/missing.py`"),
        ("README.md", "see [the notes](docs/papers/glip.md)"),
        ("docs/papers/amc.md", "the [stage notebook](../../notebooks/21_amc.ipynb)"),
        ("docs/papers/amc.md", "the [card](../../../shared/papers/amc.md)"),
        ("src/pkg/mod.py", '"""Writes ``reports/metrics/amc.json``."""'),
    ],
)
def test_checker_flags_missing_or_escaping_paths(fake_root, name, text):
    assert missing_paths(name, text, fake_root)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("README.md", "the model lives in `src/pkg/mod.py`, notes in [AMC](docs/papers/amc.md#claims)"),
        ("docs/papers/amc.md", "[notebook](../../notebooks/20_amc.ipynb), [paper](https://arxiv.org/abs/2206.15462)"),
        ("README.md", "`reports/gates.csv` and `reports/runs/amc-0/run.json` are written by stages"),
        ("README.md", "`reports/metrics/amc/<variant>-<seed>.json`, `reports/figures/*.png`, `src/pkg/`"),
        ("README.md", "`python -m pkg run` and `src/pkg/mod.py:12`"),
    ],
)
def test_checker_accepts_existing_declared_and_template_paths(fake_root, name, text):
    assert not missing_paths(name, text, fake_root)


def test_checker_reads_only_notebook_sources(fake_root):
    nb = {"cells": [{"cell_type": "markdown", "source": ["notes: [AMC](../docs/papers/amc.md)"]},
                    {"cell_type": "code", "source": ["x = 1"],
                     "outputs": [{"text": "see `src/pkg/generated_only_in_outputs.py`"}]}]}  # fmt: skip
    assert not missing_paths("notebooks/20_amc.ipynb", json.dumps(nb), fake_root)
    nb["cells"][0]["source"] = ["notes: [AMC](../docs/papers/nope.md)"]
    assert missing_paths("notebooks/20_amc.ipynb", json.dumps(nb), fake_root)
