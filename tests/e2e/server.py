"""Start `python -m inferline serve` as a real process and wait until it answers /ping."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.conftest import free_port, subprocess_env


@contextlib.contextmanager
def running_server(
    store: Path,
    *args: str,
    host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
    deadline_s: float = 30.0,
) -> Iterator[str]:
    """Yield the base URL (always via 127.0.0.1) of a server serving `store`; kill it after."""
    with server_process(store, *args, host=host, env=env, deadline_s=deadline_s) as (_, base):
        yield base


@contextlib.contextmanager
def server_process(
    store: Path,
    *args: str,
    host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
    deadline_s: float = 30.0,
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Like `running_server`, but yields (process, base URL) for tests that kill it themselves.

    The server's output goes to `server-PORT.log` beside the store.
    """
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
        yield proc, base
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
