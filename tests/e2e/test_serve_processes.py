"""`inferline serve --processes 2`: a second process answers inference on the same port.

One server with two processes is started for the module. The main process is stopped
(SIGSTOP) to show that the inference process alone accepts and answers on `--port` (and
that /metrics, in the main process, counts those answers too), and killed (SIGKILL) at the
end to show the inference process does not outlive it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from inferline.examples.iris import FEATURES
from inferline.models.store import ModelStore
from tests.conftest import free_port, subprocess_env
from tests.e2e.server import server_process

ROW = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, iris_example: Path) -> Path:
    root = tmp_path_factory.mktemp("processes") / "store"
    ModelStore(str(root)).add("iris", str(iris_example / "models/iris-1.joblib"), inputs=FEATURES)
    return root


def inference_processes(main: int) -> list[int]:
    """The server's spawned inference processes (children running multiprocessing's spawn_main)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == main and b"spawn_main" in cmdline:
            found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def server(store: Path) -> Iterator[tuple[subprocess.Popen[str], str, int]]:
    management = free_port()
    args = ("--processes", "2", "--management-port", str(management), "--watch-interval", "0")
    with server_process(store, *args, "--grpc-port", "0") as (proc, base):
        yield proc, base, management


def test_processes_need_a_management_port(store: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "inferline", "serve", "--models", str(store), "--processes", "2"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "error: serve: --processes 2 needs --management-port PORT: management must answer in one "
        "process (e.g. --management-port 8081, as TorchServe)"
    ]


def test_the_inference_process_answers_while_the_main_one_is_stopped(
    server: tuple[subprocess.Popen[str], str, int],
) -> None:
    proc, base, management = server
    deadline = time.monotonic() + 60
    while not inference_processes(proc.pid):
        assert time.monotonic() < deadline, "no inference process started"
        time.sleep(0.1)
    assert len(inference_processes(proc.pid)) == 1
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        for _ in range(3):  # a new connection each time: only the inference process can accept it
            # Generous: the inference process may still be loading its models on a busy machine.
            answer = httpx.post(f"{base}/predictions/iris", json=ROW, timeout=180)
            assert answer.status_code == 200, answer.text
            assert answer.json()["model_id"] == "iris/1" and answer.json()["predictions"] == [0]
        # Management answers in the main process only, on its own port.
        misplaced = httpx.get(f"{base}/models", timeout=60)
        assert misplaced.status_code == 404
        assert f"the management API answers on port {management}" in misplaced.json()["message"]
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    listed = httpx.get(f"http://127.0.0.1:{management}/models", timeout=30).json()
    assert [model["modelName"] for model in listed["models"]] == ["iris"]
    # /metrics answers in the main process and adds up every process's: the three answers
    # above came from the inference process while the main one was stopped.
    metrics = httpx.get(f"http://127.0.0.1:{management}/metrics", timeout=60).text
    served = [
        line for line in metrics.splitlines() if line.startswith('inferline_requests_total{model="iris"')
    ]
    assert served and float(served[0].rsplit(" ", 1)[1]) >= 3, served
    assert "inferline_metrics_processes_missing 0.0" in metrics
    elsewhere = httpx.get(f"{base}/metrics", timeout=60)
    assert elsewhere.status_code == 404
    assert f"the metrics API answers on port {management}" in elsewhere.json()["message"]


def test_the_inference_process_dies_with_the_main_one(server: tuple[subprocess.Popen[str], str, int]) -> None:
    proc, base, _ = server
    helpers = inference_processes(proc.pid)
    assert helpers
    proc.kill()  # SIGKILL: the main process cannot stop its inference process itself
    proc.wait(30)
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in helpers):
        assert time.monotonic() < deadline, "the inference process outlived the main one"
        time.sleep(0.1)
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{base}/predictions/iris", json=ROW, timeout=5)
