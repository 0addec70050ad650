from __future__ import annotations

import pytest
import torch

from vlrepro.train.distributed import all_gather_object, all_reduce_mean, select_device, setup, teardown


def test_single_process_without_torchrun_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    env = setup("cpu")
    assert (env.rank, env.world_size, env.is_main, env.distributed, env.owns_group) == (0, 1, True, False, False)
    assert env.device == torch.device("cpu")
    t = torch.tensor([2.0, 4.0])
    assert torch.equal(all_reduce_mean(t, env), torch.tensor([2.0, 4.0]))
    assert all_gather_object({"a": 1}, env) == [{"a": 1}]
    teardown(env)  # nothing to tear down


def test_device_selection() -> None:
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA"):
            select_device("cuda")
