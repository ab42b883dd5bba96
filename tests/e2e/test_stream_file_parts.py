"""A stream into a Parquet sink, SIGKILLed mid-stream several times and restarted (embedded
queue and a real redis-server): every published message is in the part files exactly once,
and no committed part ever changes."""

from __future__ import annotations

import hashlib
import signal
from pathlib import Path

import duckdb
import pytest

import inferline
from inferline.examples import iris_stream
from inferline.io.parts import part_files
from tests.conftest import CliRunner
from tests.e2e.streaming import Probe, queue_url, start_runner, stop

PIPELINE = """\
name: iris-parts
source: {{kind: topic, url: "{url}", topic: iris}}
model: {{name: iris, uri: examples/iris/models/iris-*.onnx, inputs: feature}}
key: id
sink: {{kind: parquet, path: out/preds.parquet, options: {{roll_rows: 150, roll_seconds: 0.3}}}}
batch: {{max_size: 50, max_wait_ms: 10}}
"""
TOTAL = 3_000


def _parts(folder: Path) -> dict[str, str]:
    return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in part_files(str(folder))}


@pytest.mark.parametrize(("backend", "kills"), [("embedded", 3), ("redis", 2)])
def test_sigkilled_mid_stream_then_finished_every_message_is_in_the_parts_once(
    backend: str, kills: int, project: Path, cli: CliRunner, request: pytest.FixtureRequest
) -> None:
    url = queue_url(backend, project, lambda: request.getfixturevalue("redis_url"))
    (project / "stream.yaml").write_text(PIPELINE.format(url=url))
    folder = project / "out" / "preds.parquet"
    inferline.publish("iris", iris_stream.messages(TOTAL), url=url)
    probe = Probe(url)
    committed: dict[str, str] = {}
    for _ in range(kills):
        left = probe.backlog()
        runner = start_runner(project, "--until-idle", "30")
        try:
            # Killed once this run has committed (and acked) some parts, with more in flight.
            probe.wait(lambda: probe.backlog() <= left - 300, runner)  # noqa: B023
            runner.send_signal(signal.SIGKILL)
            runner.wait(timeout=30)
        finally:
            stop(runner)
        parts = _parts(folder)
        assert {p: parts[p] for p in committed} == committed, "a committed part changed"
        committed = parts
    assert 0 < probe.backlog() <= TOTAL - 300 * kills, "the runs should have died mid-stream"

    result = cli("run", "stream.yaml", "--no-progress", "--until-idle", "1")
    assert "0 dead-lettered" in result.stdout
    assert {p: h for p, h in _parts(folder).items() if p in committed} == committed
    with duckdb.connect() as con:
        ids = con.sql(
            "SELECT id FROM read_parquet('out/preds.parquet/*.parquet', union_by_name = true) ORDER BY id"
        ).fetchall()
    assert [i for (i,) in ids] == list(range(TOTAL)), "lost or duplicated"
    assert not [p for p in folder.iterdir() if p.name.endswith(".partial")]
    assert probe.backlog() == 0 and probe.pending() == 0
    probe.close()
