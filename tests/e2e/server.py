"""Start `python -m inferline serve` as a real process and wait until it answers /ping."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.conftest import subprocess_env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def running_server(
    store: Path,
    *args: str,
    host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
    deadline_s: float = 30.0,
) -> Iterator[str]:
    """Yield the base URL (always via 127.0.0.1) of a server serving `store`; kill it after."""
    port = free_port()
    log = open(store.parent / f"server-{port}.log", "w+", encoding="utf-8")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inferline",
            "serve",
            "--models",
            str(store),
            "--host",
            host,
            "--port",
            str(port),
            *args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=subprocess_env(env),
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + deadline_s
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise AssertionError(f"server exited {proc.returncode}:\n{log.read()}")
            try:
                if httpx.get(f"{base}/ping", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server on {base} not ready within {deadline_s} s")
            time.sleep(0.05)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


def server_log(store: Path) -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(store.parent.glob("server-*.log")))
