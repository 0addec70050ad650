"""Every pipeline stage lists, among its dvc.yaml deps, each source file its command can import.

The deps are per file (or per folder where a stage reads the whole folder), so a change re-runs only the
stages that read the changed code; this test keeps that list from missing a file. Imports are found
statically in every ``import`` statement, function-level ones too, plus the library's dynamic kinds: a
package's lazy ``__getattr__`` table (``from vlrepro.data.world import build_split``), a module path written
as a string (``models.KINDS``), ``vlrepro.<section>.config`` of each params section a stage validates (its
dvc.yaml params, ``--sections``, and ``sections=[...]`` literals in the code), and a package's data file
whose name a module of that package writes as a string (``resources.files(...).joinpath("papers.yaml")``).
A notebook stage adds its notebook's code cells. Not followed: attribute access on a lazy package
(``import vlrepro.report as r; r.build_report``) and commands a notebook runs in a shell (``!python -m``).
It replaces a check that imported every module of a paper's package, which also counted modules that no
command imports (``smcim/efficiency.py``, read by the notebook only).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
MODULE = re.compile(r"^vlrepro(\.\w+)+$")


def module_file(name: str) -> Path | None:
    path = SRC.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _lazy_tables(tree: ast.Module) -> dict[str, str]:
    """A package's ``{name: submodule}`` tables (``_EXPORTS``, ``_LAZY``) that its ``__getattr__`` imports."""
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and isinstance(node.value, ast.Dict):
            for k, v in zip(node.value.keys, node.value.values, strict=True):
                if isinstance(k, ast.Constant) and isinstance(v, ast.Constant) and isinstance(v.value, str):
                    out[str(k.value)] = v.value
    return out


def imported(name: str, path: Path, source: str | None = None) -> set[str]:
    """Module names ``name`` (at ``path``) imports, some of them names of things rather than modules."""
    tree = ast.parse(source if source is not None else path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            out.add(base)
            init = module_file(base)
            lazy = _lazy_tables(ast.parse(init.read_text())) if init and init.name == "__init__.py" else {}
            for a in node.names:
                out.add(f"{base}.{a.name}")
                if a.name in lazy:
                    out.add(f"{base}.{lazy[a.name]}")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and MODULE.match(node.value):
            out.add(node.value)
        elif isinstance(node, ast.keyword) and node.arg == "sections" and isinstance(node.value, ast.List | ast.Tuple):
            out |= {f"vlrepro.{e.value}.config" for e in node.value.elts if isinstance(e, ast.Constant)}
    return out


def data_files(path: Path) -> set[Path]:
    """The non-Python files of ``path``'s package that its source names as string constants."""
    names = {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)}
    return {f for f in path.parent.iterdir() if f.is_file() and f.suffix != ".py" and f.name in names}


def closure(roots: set[str]) -> set[Path]:
    """Files of every ``vlrepro`` module reachable from ``roots``, parent packages and data files included."""
    seen: dict[str, Path] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if not name.startswith("vlrepro") or name in seen or (path := module_file(name)) is None:
            continue
        seen[name] = path
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        todo += imported(name, path)
    return set(seen.values()).union(*(data_files(p) for p in seen.values()))


def stage_roots(stage: dict) -> set[str]:
    """The modules a stage's command starts from, its notebook's imports, and its params sections' configs."""
    words = stage["cmd"].split()
    roots = {words[2], f"{words[2]}.__main__"}
    if words[2] == "vlrepro.stage":
        notebook = ROOT / "notebooks" / f"{words[3]}.ipynb"
        cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
        code = "\n".join("".join(c["source"]) for c in cells)
        code = "\n".join(line for line in code.splitlines() if not line.lstrip().startswith(("%", "!")))
        roots |= imported("__main__", notebook, code)
    sections = {p.split(".")[-1] if p.startswith("profiles.") else p.split(".")[0] for p in stage.get("params", [])
                if isinstance(p, str)}  # fmt: skip
    if "--sections" in words:
        sections |= set(words[words.index("--sections") + 1 :])
    return roots | {f"vlrepro.{s}.config" for s in sections}


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_imported_source_file_is_a_dependency(name):
    stage = STAGES[name]
    deps = [ROOT / str(d).split()[0] for d in stage.get("deps", [])]
    needed = closure(stage_roots(stage))
    missing = sorted(str(f.relative_to(ROOT)) for f in needed if not any(f == d or d in f.parents for d in deps))
    assert not missing, f"dvc.yaml: stage {name} imports files it does not list in deps: {missing}"


def test_the_closure_follows_lazy_tables_and_module_strings():
    files = {str(f.relative_to(SRC)) for f in closure({"vlrepro.models"})}
    assert "vlrepro/models/clip.py" in files  # named in models.KINDS only
    world = imported("x", ROOT / "x.py", "from vlrepro.data.world import build_split\n")
    assert "vlrepro.data.world.suite" in world  # through the package's _EXPORTS table
    assert "vlrepro.glip.config" in imported("x", ROOT / "x.py", "load_params(p, sections=['glip'])\n")
    report = {str(f.relative_to(SRC)) for f in closure({"vlrepro.report.references"})}
    assert "vlrepro/report/references.yaml" in report and "vlrepro/report/papers.yaml" not in report
