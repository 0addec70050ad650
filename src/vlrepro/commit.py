"""``python -m vlrepro.commit STAGE ...``: record finished stages in dvc.lock, writing it once.

``dvc commit --force STAGE ...`` records its targets one at a time, and each time re-reads and rewrites
the whole dvc.lock (a round-trip YAML parse): about 2 s a stage with a hundred stages in the file, so
recording the smoke pipeline's 99 runs took DVC minutes. This does the same per stage — save the
stage's dependency and output hashes, commit its outputs to the cache — and writes dvc.lock once, with
DVC's own serialisation (``tests/test_matrix.py`` checks that the file comes out byte for byte as
``dvc commit`` writes it).
"""

from __future__ import annotations

import sys
from pathlib import Path

from dvc.repo import Repo, locked


@locked
def commit(repo: Repo, names: list[str]) -> None:
    by_name = {stage.addressing: stage for stage in repo.index.stages}
    if missing := [name for name in names if name not in by_name]:
        raise ValueError(f"dvc.yaml has no stage named {', '.join(missing)}")
    stages = [by_name[name] for name in dict.fromkeys(names)]
    for stage in stages:
        stage.save()
        stage.commit(relink=True)
    for path in dict.fromkeys(stage.dvcfile.path for stage in stages):
        group = [stage for stage in stages if stage.dvcfile.path == path]
        group[0].dvcfile.dump_stages(group, update_pipeline=False)


def main(argv: list[str] | None = None) -> int:
    names = sys.argv[1:] if argv is None else argv
    with Repo(str(Path.cwd()), _wait_for_lock=True) as repo:  # waits, as `dvc --wait-for-lock`, for another DVC
        try:
            commit(repo, names)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
