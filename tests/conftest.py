"""Shared fixtures: a built iris example, and a way to run the CLI as a user would."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# One torch thread per process (and in every CLI/server child, which inherits it): three xdist
# workers share two cores, and torch's two-thread pool spin-waits for the core another worker
# holds (training the digits CNN: 43.6 s CPU with two threads, 11.6 s with one, load 10). Torch
# reads MKL_NUM_THREADS when OMP_NUM_THREADS is unset; OMP_NUM_THREADS would also size pyarrow's
# CPU pool (and `serve --processes` leaves it alone when set), which the tests must not change.
os.environ.setdefault("MKL_NUM_THREADS", "1")

import inferline  # noqa: E402

# TensorFlow imports Keras when it is imported: whichever test imports it first must not
# switch the Keras tests to the TensorFlow backend (inferline runs Keras on torch).
os.environ.setdefault("KERAS_BACKEND", "torch")
from inferline.examples import iris

# Subprocesses import the same inferline as the tests, wherever it lives.
SRC = str(Path(inferline.__file__).resolve().parents[1])


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process: ours, with inferline importable."""
    env = {**os.environ, **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, env.get("PYTHONPATH", "")) if p)
    return env


CliRunner = Callable[..., subprocess.CompletedProcess[str]]


class FakeClock:
    """A clock for code that takes `clock=` and `sleep=`: sleeping moves it, and is recorded."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    """A `FakeClock` at 0 s; pass `clock=fake_clock, sleep=fake_clock.sleep`."""
    return FakeClock()


@pytest.fixture(scope="session")
def iris_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/iris built once per test run (data, .joblib and .onnx models); read-only: the
    `project` fixture copies it."""

    def build(folder: Path) -> None:
        iris.build(str(folder / "examples" / "iris"))

    return built_once(tmp_path_factory, "iris-example", build) / "examples" / "iris"


@pytest.fixture
def project(tmp_path: Path, iris_example: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory holding a copy of examples/iris; the cwd of the test."""
    shutil.copytree(iris_example, tmp_path / "examples" / "iris")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# What every CLI command imports: a zygote (tests/e2e/zygote.py) imports it once and forks a
# child per command. Beam is left out: importing it sets up root logging.
CLI_PRELOAD = (
    "inferline.cli",
    "inferline.engine.local",
    "inferline.pipeline",
    "inferline.models.registry",
    "inferline.models.sklearn",
    "inferline.models.onnx",
    "inferline.models.torch",
    "inferline.io.warehouse",
    "inferline.report.html",
    "inferline.serve.app",
    "inferline.sql.bigquery",
    "sklearn.base",
    "scipy.stats",
    "pandas",
    "pyarrow.dataset",
    "pyarrow.parquet",
    "duckdb",
    "onnxruntime",
    "torch",
    "PIL.Image",
)

# Environment variables read when Python starts or a preloaded module is imported (thread pools,
# sys.path, Keras/TensorFlow/Typer settings): a command whose value differs from the zygote's
# runs as a real process, since the zygote's imports already saw the old value.
IMPORT_TIME_ENV = re.compile(
    r"^(PYTHON|MKL_|OMP_|OPENBLAS_|KMP_|TORCH|CUDA|KERAS_|TF_|HF_|TRANSFORMERS_|TOKENIZERS_|ORT_|ARROW_"
    r"|DUCKDB_|TERMINAL_WIDTH$|FORCE_TERMINAL$|_TYPER_|NO_COLOR$|LD_)"
)


class CliZygote:
    """A worker's zygote for `python -m inferline` (started on first use, stopped at the end of
    the session); None from `client()` when a command must run as a real process."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.stack = contextlib.ExitStack()
        self.env: dict[str, str] | None = None
        self.command: list[str] | None = None
        self.failed = os.environ.get("INFERLINE_TEST_ZYGOTE", "1") == "0"

    def client(self, env: dict[str, str]) -> list[str] | None:
        if self.failed:
            return None
        if self.command is None:
            from tests.e2e import zygote

            self.env = subprocess_env()
            try:
                self.command = self.stack.enter_context(
                    zygote.running(
                        "inferline",
                        CLI_PRELOAD,
                        cwd=self.folder,
                        env=self.env,
                        log=self.folder / "zygote.log",
                    )
                )
            except RuntimeError as exc:  # run real processes: slower, still right
                print(f"cli zygote not started, commands run as real processes: {exc}", file=sys.stderr)
                self.failed = True
                return None
        assert self.env is not None
        changed = {k for k in {*env, *self.env} if env.get(k) != self.env.get(k)}
        if any(IMPORT_TIME_ENV.match(k) for k in changed):
            return None
        return self.command


@pytest.fixture(scope="session")
def cli_zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliZygote]:
    zygote = CliZygote(tmp_path_factory.mktemp("cli-zygote"))
    with zygote.stack:
        yield zygote


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "real_process: the `cli` fixture runs each command as a fresh `python -m inferline` process "
        "instead of a fork of the session's zygote (for tests about process-level behaviour)",
    )


@pytest.fixture
def cli(project: Path, cli_zygote: CliZygote, request: pytest.FixtureRequest) -> CliRunner:
    """Run `inferline ...` in the project directory as a subprocess: a fork of the worker's
    zygote that has already imported inferline's heavy modules (the same argv, cwd, environment,
    stdio and exit status as `python -m inferline`, without its 1-3 s of imports), or a real
    process for tests marked `real_process` and environments that act at import time."""
    real = request.node.get_closest_marker("real_process") is not None

    def run(
        *args: str,
        check: bool = True,
        timeout: float = 300,  # a hang detector: at load 10-15 a Beam run took over 120 s
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        full_env = subprocess_env(env)
        client = None if real else cli_zygote.client(full_env)
        prefix = client if client is not None else [sys.executable, "-m", "inferline"]
        # A timeout kills the client (SIGKILL); the zygote then kills the command's process group.
        result = subprocess.run(
            [*prefix, *args],
            cwd=project,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=full_env,
            input=input,
        )
        result.args = [sys.executable, "-m", "inferline", *args]
        if check and result.returncode != 0:
            raise AssertionError(
                f"inferline {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    return run


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder `build` fills once per test run, for read-only use: under pytest-xdist the
    first worker to ask builds it in the run's shared temp folder while the others wait on a
    lock, instead of every worker building its own (training a model costs each of them)."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        root = tmp_path_factory.mktemp(name)
        build(root)
        return root
    import fcntl

    root = tmp_path_factory.getbasetemp().parent / name
    with open(root.with_name(f"{name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        done = root.with_name(f"{name}.built")
        if not done.exists():
            shutil.rmtree(root, ignore_errors=True)  # a worker that failed half-way
            root.mkdir()
            build(root)
            done.touch()
    return root


@pytest.fixture(scope="session")
def digits_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/digits built once per test run (held-out PNGs, trained CNN, pipeline); read-only:
    tests that change it copy it first."""
    from inferline.examples import digits

    def build(folder: Path) -> None:
        digits.build(str(folder / "examples" / "digits"))

    return built_once(tmp_path_factory, "digits-example", build) / "examples" / "digits"


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for redis-server and `inferline serve` in tests)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_pair() -> int:
    """A free port P whose neighbour P+1 is free too (TorchServe's 7070/7071 layout)."""
    import socket

    for _ in range(100):
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two neighbouring free ports")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """A real `redis-server` on a free loopback port for the session; yields its URL."""
    import time

    import redis

    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """A Redis URL with an empty database for this test."""
    import redis

    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    client.close()
    yield redis_server
