"""The sink's disk fills up mid-stream: the run ends with the root cause in one line, the
un-committed messages stay unacked, and a rerun after freeing space loses nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from inferline.examples import iris_stream
from tests.conftest import CliRunner
from tests.e2e.streaming import Probe, start_runner, stop, write_pipeline

TOTAL = 15_000


@pytest.fixture
def tiny_disk(project: Path) -> Iterator[Path]:
    """A 512 KB tmpfs (needs root: mount)."""
    folder = project / "tiny"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(folder)], check=False)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_names_the_cause_and_a_rerun_loses_nothing(
    project: Path, cli: CliRunner, tiny_disk: Path
) -> None:
    write_pipeline(project, "queue.db", max_size=2_000)
    spec = (project / "stream.yaml").read_text()
    (project / "stream.yaml").write_text(
        spec.replace("path: warehouse.duckdb", "path: tiny/warehouse.duckdb")
    )
    lines = "\n".join(json.dumps(m) for m in iris_stream.messages(TOTAL)) + "\n"
    cli("publish", "iris", "--url", "queue.db", input=lines)
    failed = cli("run", "stream.yaml", "--no-progress", "--until-idle", "1", check=False)
    assert failed.returncode == 1, failed.stdout
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: tiny/warehouse.duckdb table iris_stream: cannot ")
    assert last.endswith("No space left on device)")
    assert "Traceback" not in failed.stderr and "cannot rollback" not in failed.stderr
    probe = Probe(str(project / "queue.db"))
    assert probe.pending() + probe.backlog() > 0  # what was not committed is not acked
    subprocess.run(["mount", "-o", "remount,size=64m", str(tiny_disk)], check=True)
    cli("run", "stream.yaml", "--no-progress", "--until-idle", "1")
    with duckdb.connect(str(tiny_disk / "warehouse.duckdb"), read_only=True) as con:
        ids = [r[0] for r in con.sql("SELECT id FROM iris_stream ORDER BY id").fetchall()]
    assert ids == list(range(TOTAL))
    assert probe.backlog() == 0 and probe.pending() == 0
    probe.close()


def _immutable(folder: Path, on: bool) -> None:
    """chattr +i/-i on `folder` and its files: even root's writes fail (EPERM), open files too."""
    flag = "+i" if on else "-i"
    for path in [folder, *folder.iterdir()] if on else [*folder.iterdir(), folder]:
        done = subprocess.run(["chattr", flag, str(path)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"chattr {flag} is not allowed here")


def test_a_sink_made_read_only_mid_stream_names_the_cause_and_a_rerun_loses_nothing(
    project: Path, cli: CliRunner
) -> None:
    if shutil.which("chattr") is None:
        pytest.skip("no chattr")
    write_pipeline(project, "queue.db", max_size=100)
    spec = (project / "stream.yaml").read_text()
    (project / "stream.yaml").write_text(spec.replace("path: warehouse.duckdb", "path: ro/warehouse.duckdb"))
    (project / "ro").mkdir()
    cli(
        "publish",
        "iris",
        "--url",
        "queue.db",
        input="".join(json.dumps(m) + "\n" for m in iris_stream.messages(300)),
    )
    probe = Probe(str(project / "queue.db"))
    runner = start_runner(project, "--until-idle", "60")
    try:
        probe.wait(lambda: probe.backlog() == 0, runner)  # committed
        _immutable(project / "ro", True)
        try:
            more = "".join(json.dumps(m) + "\n" for m in iris_stream.messages(300, start=300))
            cli("publish", "iris", "--url", "queue.db", input=more)
            out, err = runner.communicate(timeout=90)
        finally:
            _immutable(project / "ro", False)
    finally:
        stop(runner)
    assert runner.returncode == 1, out + err
    last = err.strip().splitlines()[-1]
    # The commit or the checkpoint after it fails, whichever comes first: either names the cause.
    assert last.startswith("error: ro/warehouse.duckdb"), err
    assert last.endswith('warehouse.duckdb.wal": Operation not permitted)'), err
    assert "Traceback" not in err and "cannot rollback" not in err
    assert probe.pending() + probe.backlog() > 0  # what was not committed is not acked
    cli("run", "stream.yaml", "--no-progress", "--until-idle", "1")
    with duckdb.connect(str(project / "ro" / "warehouse.duckdb"), read_only=True) as con:
        ids = [r[0] for r in con.sql("SELECT id FROM iris_stream ORDER BY id").fetchall()]
    assert ids == list(range(600))
    assert probe.backlog() == 0 and probe.pending() == 0
    probe.close()
