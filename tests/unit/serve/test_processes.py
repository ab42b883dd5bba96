"""serve --processes N: each process's share of the cores for torch/OpenMP threads, and the
main process waiting for the others to accept before it serves."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from inferline.serve.processes import share_cores, wait_accepting
from inferline.serve.shared_accept import open_counts


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


class FakeProcess:
    """An inference process as `wait_accepting` sees it: alive or not."""

    def __init__(self, name: str, alive: bool = True) -> None:
        self.name = name
        self.alive = alive

    def is_alive(self) -> bool:
        return self.alive


def test_the_main_process_waits_for_the_others_to_accept(caplog: pytest.LogCaptureFixture) -> None:
    counts = open_counts(3)
    ready, dead = FakeProcess("inferline-inference-1"), FakeProcess("inferline-inference-2", alive=False)
    accepting = threading.Timer(0.2, lambda: counts.__setitem__(1, 0))  # its acceptor starts
    accepting.start()
    started = time.monotonic()
    wait_accepting([ready, dead], counts, timeout_s=60)  # type: ignore[list-item]
    assert 0.15 < time.monotonic() - started < 30  # waited for the first; not for the dead one
    assert not caplog.records
    slow = FakeProcess("inferline-inference-1")
    wait_accepting([slow], open_counts(2), timeout_s=0.1)  # type: ignore[list-item]
    assert "inferline-inference-1 not accepting after 0 s; serving without waiting" in caplog.text
