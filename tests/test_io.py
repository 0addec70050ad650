"""Atomic writes: a writer that fails leaves the old file whole and no temp file behind."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from vlrepro.io import atomic_path, atomic_write, atomic_write_text
from vlrepro.train import evaluating


def test_atomic_path_replaces_on_success_with_the_usual_permissions(tmp_path):
    path = tmp_path / "sub" / "model.bin"
    with atomic_path(path) as tmp:
        assert tmp.parent == path.parent and not path.exists()
        tmp.write_bytes(b"new")
    assert path.read_bytes() == b"new"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.bin"]


@pytest.mark.parametrize("use_path", [True, False])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, use_path):
    path = atomic_write_text(tmp_path / "a.json", "old")
    with pytest.raises(RuntimeError, match="killed"):
        if use_path:
            with atomic_path(path) as tmp:
                tmp.write_text("half")
                raise RuntimeError("killed")
        else:

            def write(f):
                f.write(b"half")
                raise RuntimeError("killed")

            atomic_write(path, write)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


@pytest.mark.parametrize("was_training", [True, False])
def test_evaluating_restores_the_mode_even_after_an_error(was_training):
    model = torch.nn.Dropout(0.5).train(was_training)
    with pytest.raises(ValueError), evaluating(model):
        assert not model.training
        raise ValueError
    assert model.training is was_training
