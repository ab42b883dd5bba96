"""The README test's `inferline` shim (tests/e2e/zygote.py) behaves as a real `python -m` process:
the same output, exit status and signals, for a probe module and for inferline itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import CliRunner, subprocess_env
from tests.e2e import zygote

PROBE = """
import os, signal, sys, threading, time
command = sys.argv[1:]
print("argv", os.path.basename(sys.argv[0]), command, "cwd", os.getcwd(), "path0", sys.path[0])
print("env", os.environ.get("PROBE"), "stdin", sys.stdin.read() if command == ["cat"] else sys.stdin is None)
print("err", sys.stderr.line_buffering, file=sys.stderr)
if command[:1] == ["exit"]:
    sys.exit(int(command[1]) if command[1].isdigit() else command[1])
if command == ["die"]:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)
if command == ["raise"]:
    raise ValueError("boom")
if command == ["wait"]:
    open("pid", "w").write(str(os.getpid()))
    if os.environ.get("HANDLE"):
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))
    time.sleep(120)
if command == ["thread"]:  # a non-daemon thread finishes before the process exits
    threading.Thread(target=lambda: (time.sleep(0.2), print("thread done", flush=True))).start()
"""


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("probe")
    (folder / "probe.py").write_text(PROBE, encoding="utf-8")
    (folder / "work").mkdir()
    return folder


@pytest.fixture(scope="module")
def client(probe_dir: Path) -> Iterator[list[str]]:
    env = subprocess_env({"PYTHONPATH": str(probe_dir)})
    with zygote.running("probe", [], cwd=probe_dir, env=env, log=probe_dir / "zygote.log") as command:
        yield command


def both(
    client: list[str],
    probe_dir: Path,
    *args: str,
    cwd: Path | None = None,
    stdin: str = "",
    wrap: tuple[str, ...] = (),
) -> list[subprocess.CompletedProcess[str]]:
    """The probe run as `python -m probe ARGS` and through the zygote's client."""
    env = subprocess_env({"PROBE": "yes", "PYTHONPATH": str(probe_dir)})
    cwd = cwd or probe_dir
    return [
        subprocess.run(
            [*wrap, *prefix, *args], cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=60
        )
        for prefix in ([sys.executable, "-m", "probe"], client)
    ]


@pytest.mark.parametrize("args", [[], ["exit", "3"], ["exit", "text"], ["cat"], ["thread"], ["die"]])
def test_output_and_exit_status_are_a_real_processes(
    client: list[str], probe_dir: Path, args: list[str]
) -> None:
    real, forked = both(client, probe_dir, *args, cwd=probe_dir / "work", stdin="typed\n")
    assert (forked.returncode, forked.stdout, forked.stderr) == (real.returncode, real.stdout, real.stderr)


def test_a_closed_stdin_stays_closed(client: list[str], probe_dir: Path) -> None:
    real, forked = both(client, probe_dir, wrap=("bash", "-c", 'exec "$@" <&-', "-"))
    assert real.returncode == forked.returncode == 0
    assert "stdin True" in real.stdout and forked.stdout == real.stdout


def test_an_uncaught_exception_exits_1_with_its_traceback(client: list[str], probe_dir: Path) -> None:
    real, forked = both(client, probe_dir, "raise")
    assert real.returncode == forked.returncode == 1
    assert real.stderr.splitlines()[-1] == forked.stderr.splitlines()[-1] == "ValueError: boom"


def started(process: subprocess.Popen[str], pid_file: Path) -> int:
    deadline = time.monotonic() + 60
    while not (pid_file.exists() and pid_file.read_text()):
        assert process.poll() is None and time.monotonic() < deadline, "the probe did not start"
        time.sleep(0.02)
    return int(pid_file.read_text())


@pytest.mark.parametrize(
    ("signum", "handle"), [(signal.SIGTERM, ""), (signal.SIGTERM, "1"), (signal.SIGINT, "")]
)
def test_a_signal_to_the_shim_ends_the_command_as_a_real_process(
    client: list[str], probe_dir: Path, tmp_path: Path, signum: int, handle: str
) -> None:
    codes = []
    for prefix in ([sys.executable, "-m", "probe"], client):
        (tmp_path / "pid").unlink(missing_ok=True)
        env = subprocess_env({"PYTHONPATH": str(probe_dir), "HANDLE": handle})
        with subprocess.Popen(
            [*prefix, "wait"], cwd=tmp_path, env=env, text=True, stderr=subprocess.PIPE
        ) as process:
            started(process, tmp_path / "pid")
            process.send_signal(signum)
            process.wait(60)
            codes.append(process.returncode)
    assert codes[0] == codes[1] == (7 if handle else -signum)


def test_a_killed_shim_takes_its_command_along(client: list[str], probe_dir: Path, tmp_path: Path) -> None:
    env = subprocess_env({"PYTHONPATH": str(probe_dir)})
    with subprocess.Popen([*client, "wait"], cwd=tmp_path, env=env) as process:
        pid = started(process, tmp_path / "pid")
        process.kill()
    deadline = time.monotonic() + 60
    while os.path.exists(f"/proc/{pid}") and "zombie" not in Path(f"/proc/{pid}/status").read_text():
        assert time.monotonic() < deadline, "the command outlived its shim"
        time.sleep(0.05)
    real, forked = both(client, probe_dir, "exit", "4")  # and the zygote goes on
    assert real.returncode == forked.returncode == 4


def test_inferline_answers_as_a_real_process(tmp_path: Path) -> None:
    env = subprocess_env({"COLUMNS": "120"})
    with zygote.running(
        "inferline", ["inferline.cli"], cwd=tmp_path, env=env, log=tmp_path / "log"
    ) as client:
        for args in (["--help"], ["run", "missing.yaml"]):
            real, forked = (
                subprocess.run(
                    [*prefix, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
                )
                for prefix in ([sys.executable, "-m", "inferline"], client)
            )
            assert (forked.returncode, forked.stdout, forked.stderr) == (
                real.returncode,
                real.stdout,
                real.stderr,
            )


WHO_RUNS = """
import os, time
from pathlib import Path

def who(batch):
    parent = Path(f"/proc/{os.getppid()}/cmdline").read_bytes().replace(b"\\0", b" ").decode()
    Path("who").write_text(f"{os.getpid()}\\n{parent}\\n{os.environ.get('MKL_NUM_THREADS')}")
    if Path("hang").exists():
        time.sleep(600)
    return batch
"""


def test_the_cli_fixture_forks_its_commands_from_a_zygote(project: Path, cli: CliRunner) -> None:
    """A command runs in a fork of the worker's zygote; one whose environment acts at import
    time runs as a real process; a timeout raises TimeoutExpired and kills the command."""
    Path("who_hook.py").write_text(WHO_RUNS, encoding="utf-8")
    spec = {
        "name": "who",
        "source": {"kind": "csv", "path": "examples/iris/data/iris.csv"},
        "key": "id",
        "steps": [{"map": "who_hook:who"}],
        "sink": {"kind": "jsonl", "path": "out.jsonl"},
    }
    Path("who.yaml").write_text(json.dumps(spec), encoding="utf-8")
    cli("run", "who.yaml")
    _, parent, threads = Path("who").read_text().splitlines()
    assert "zygote.sock" in parent and threads == os.environ["MKL_NUM_THREADS"]
    other = str(int(os.environ["MKL_NUM_THREADS"]) + 1)
    cli("run", "who.yaml", env={"MKL_NUM_THREADS": other})
    _, parent, threads = Path("who").read_text().splitlines()
    assert "zygote.sock" not in parent and threads == other
    Path("hang").touch()
    Path("who").unlink()
    with pytest.raises(subprocess.TimeoutExpired):
        cli("run", "who.yaml", timeout=30)
    pid = int(Path("who").read_text().split()[0])
    deadline = time.monotonic() + 60
    while os.path.exists(f"/proc/{pid}") and "zombie" not in Path(f"/proc/{pid}/status").read_text():
        assert time.monotonic() < deadline, "the command outlived its timeout"
        time.sleep(0.05)
