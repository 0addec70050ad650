"""Run one pipeline notebook: ``python -m vlrepro.stage 00_data [--sections data ...] [-p key value ...]``.

What every notebook stage's ``cmd`` calls. It validates the notebook's params.yaml sections first (a bad
value stops here, before any compute; without ``--sections``, every section), executes
``notebooks/<name>.ipynb`` with papermill on the project's own kernel into
``reports/notebooks/<name>.ipynb``, then exports that to HTML without code cells. Paths are relative to
the working directory, the repository root where DVC runs stages. A failed run keeps its partly
executed notebook as ``reports/notebooks/<name>.failed.ipynb``, with the traceback in the failing cell.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from vlrepro.config import ConfigError, find_params_file, load_params
from vlrepro.io import atomic_write_text

KERNEL = "vlrepro"
STAGE_THREADS = 2  # intra-op threads of a notebook stage's kernel, whatever the machine (matrix runs use 1)


def ensure_kernel() -> str:
    """Name of the Jupyter kernel to run notebooks on: the project's, registered in this environment."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        # A fresh environment that skipped `make install`: register the kernel next to this interpreter.
        from ipykernel.kernelspec import install

        install(kernel_name=KERNEL, display_name="vlrepro (.venv)", prefix=sys.prefix)
    return KERNEL


def run_notebook(name: str, root: Path, params_file: Path, parameters: dict | None = None) -> Path:
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    src = root / "notebooks" / f"{name}.ipynb"
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such notebook; stages live in notebooks/<name>.ipynb")
    out_dir = root / "reports" / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{name}.ipynb"
    tmp = out_dir / f".{name}.running.ipynb"
    failed = out_dir / f"{name}.failed.ipynb"
    params = {"params_file": str(params_file.resolve()), **(parameters or {})}
    try:
        papermill.execute_notebook(
            str(src), str(tmp), parameters=params, kernel_name=ensure_kernel(), cwd=str(root), progress_bar=False,
            log_output=True,
        )
    except BaseException:
        if tmp.exists():
            os.replace(tmp, failed)
        raise
    os.replace(tmp, out)
    failed.unlink(missing_ok=True)
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(out, as_version=4))
    atomic_write_text(out.with_suffix(".html"), body)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebook", help="notebook name without .ipynb, e.g. 00_data")
    ap.add_argument("--sections", nargs="+", metavar="SECTION",
                    help="the params.yaml sections the notebook reads (default: all), validated before it starts")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                    help="extra papermill parameter (string value)")
    args = ap.parse_args(argv)
    try:
        params_file = find_params_file()
        load_params(params_file, sections=args.sections)  # fail fast, before starting a kernel
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    # A fixed intra-op thread count (as `amc pretrain`): reductions are split by thread count, so the default,
    # one thread per core, would give other numbers on a machine with more cores than the recording one's two.
    os.environ["OMP_NUM_THREADS"] = str(STAGE_THREADS)
    run_notebook(args.notebook, Path.cwd(), params_file, dict(args.parameter))
    return 0


if __name__ == "__main__":
    sys.exit(main())
