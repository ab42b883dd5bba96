"""serve --processes N: each process's share of the cores for torch/OpenMP threads."""

from __future__ import annotations

import os
import sys

import pytest

from inferline.serve.processes import share_cores


class FakeTorch:
    def __init__(self) -> None:
        self.threads: list[int] = []

    def set_num_threads(self, threads: int) -> None:
        self.threads.append(threads)


def test_processes_share_the_cores_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = FakeTorch()
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # recorded, so teardown restores the real value
    monkeypatch.delenv("OMP_NUM_THREADS")
    share_cores(1)
    assert "OMP_NUM_THREADS" not in os.environ and torch.threads == []
    share_cores(3)
    assert os.environ["OMP_NUM_THREADS"] == "2" and torch.threads == [2]
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # the user's choice stands
    share_cores(2)
    assert os.environ["OMP_NUM_THREADS"] == "4" and torch.threads == [2]
