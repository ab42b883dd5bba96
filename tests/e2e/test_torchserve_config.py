"""`inferline serve --ts-config config.properties` with TorchServe's three ports, as a process.

The config binds inference on every interface without a token (management stays on
127.0.0.1 on its own port), loads one of two archives of its model_store under another name
(its requirements are not installed), gives the model its batch settings and two workers,
and names keys inferline does not use (warned about once); `--metrics-port` on the command
line wins over the file's metrics_address.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import free_port, subprocess_env
from tests.e2e.torchserve import archive

pytest.importorskip("model_archiver")

COUNTER = """
def handle(data, context):
    return [{"items": len(data)} for _ in data]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], str]]:
    folder = tmp_path_factory.mktemp("ts-config")
    (folder / "counter.py").write_text(COUNTER)
    # An archive's requirements are never installed (this one does not exist anywhere).
    (folder / "requirements.txt").write_text("inferline-no-such-package==0.0.1\n")
    archive(folder, "counter", "--version", "1.0", "--handler", "counter.py",
            "--requirements-file", "requirements.txt")  # fmt: skip
    archive(folder, "other", "--version", "1.0", "--handler", "counter.py")
    inference, management, unused_metrics, metrics = (free_port() for _ in range(4))
    models = {"counted": {"1.0": {"batchSize": 3, "maxBatchDelay": 40, "minWorkers": 2, "maxWorkers": 4}}}
    (folder / "config.properties").write_text(
        f"inference_address=http://0.0.0.0:{inference}\n"
        f"management_address=http://127.0.0.1:{management}\n"
        f"metrics_address=http://127.0.0.1:{unused_metrics}\n"
        f"model_store={folder}\n"
        "load_models=counted=counter.mar\n"  # TorchServe's name=archive form
        "default_workers_per_model=1\n"
        f"models={json.dumps(models)}\n"
        "vmargs=-Xmx1g\n"
        "number_of_netty_threads=4\n"
    )
    log = open(folder / "server.log", "w+", encoding="utf-8")  # noqa: SIM115
    command = ["serve", "--ts-config", "config.properties", "--metrics-port", str(metrics)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "inferline", *command],
        stdout=log, stderr=subprocess.STDOUT, env=subprocess_env(), start_new_session=True, cwd=folder,
    )  # fmt: skip
    urls = {name: f"http://127.0.0.1:{port}" for name, port in
            (("inference", inference), ("management", management), ("metrics", metrics),
             ("unused", unused_metrics))}  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.seek(0) or log.read()
            try:
                if httpx.get(f"{urls['inference']}/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "not ready within 60 s"
            time.sleep(0.1)
        log.seek(0)
        yield urls, log.read()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


def test_each_api_answers_on_its_own_port(server: tuple[dict[str, str], str]) -> None:
    urls, _ = server
    inference, management, metrics = urls["inference"], urls["management"], urls["metrics"]
    assert httpx.post(f"{inference}/predictions/counted", json={"x": 1}, timeout=30).json() == {"items": 1}
    refused = httpx.get(f"{inference}/models", timeout=30)
    assert refused.status_code == 404 and refused.json()["type"] == "ResourceNotFoundException"
    assert (
        refused.json()["message"]
        == f"GET /models: the management API answers on port {management.rsplit(':', 1)[1]}"
    )
    assert httpx.post(f"{inference}/v2/repository/index", timeout=30).status_code == 404
    assert httpx.get(f"{inference}/metrics", timeout=30).status_code == 404
    assert httpx.post(f"{management}/predictions/counted", json={}, timeout=30).status_code == 404
    assert [m["modelName"] for m in httpx.get(f"{management}/models", timeout=30).json()["models"]] == [
        "counted"
    ]
    scrape = httpx.get(f"{metrics}/metrics", timeout=30)
    assert scrape.status_code == 200 and 'ts_inference_requests_total{model_name="counted"}' in scrape.text
    with pytest.raises(httpx.TransportError):  # --metrics-port won over metrics_address
        httpx.get(f"{urls['unused']}/metrics", timeout=5)


def test_the_models_entry_sets_batching_and_workers(server: tuple[dict[str, str], str]) -> None:
    urls, log = server
    [counter] = httpx.get(f"{urls['management']}/models/counted", timeout=30).json()
    assert (counter["batchSize"], counter["maxBatchDelay"]) == (3, 40.0)
    assert (counter["minWorkers"], counter["maxWorkers"], len(counter["workers"])) == (2, 4, 2)
    assert log.count("ignoring number_of_netty_threads, vmargs") == 1
