"""`inferline publish` and `inferline run` on a topic, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from inferline.examples import iris_stream
from inferline.io.topics import open_topic
from tests.conftest import CliRunner
from tests.e2e.streaming import Probe, table_ids, write_pipeline


def test_poison_messages_are_dead_lettered_and_the_stream_goes_on(project: Path, cli: CliRunner) -> None:
    write_pipeline(project, "queue.db", max_size=64)
    lines = [json.dumps(m) for m in iris_stream.messages(300)]
    lines[10] = "this is not json"
    lines[150] = json.dumps({"id": 150, "feature": [1.0, 2.0, 3.0]})  # wrong shape
    lines[200] = json.dumps({"id": 200, "feature": "oops"})  # wrong type
    published = cli("publish", "iris", "--url", "queue.db", input="\n".join(lines) + "\n")
    assert published.stdout.startswith("published 300 messages to topic iris at queue.db")
    result = cli("run", "stream.yaml", "--no-progress", "--until-idle", "0.5", "--stats-every", "0.2")
    assert "300 rows read, 297 predicted, 3 dead-lettered" in result.stdout
    assert "latency: p50 " in result.stdout and "(publish -> committed)" in result.stdout
    stats = [line for line in result.stderr.splitlines() if line.startswith("stats: ")]
    assert any(" msg/s, latency p50 " in line for line in stats)
    assert stats[-1].endswith(", backlog 0")  # the last line is the stream's state as it ends
    assert table_ids(project) == [i for i in range(300) if i not in (10, 150, 200)]
    with duckdb.connect(str(project / "warehouse.duckdb"), read_only=True) as con:
        dead = con.sql("SELECT raw, error, stage FROM iris_stream_errors ORDER BY key").fetchall()
        (row,) = con.sql("SELECT input, predict FROM iris_stream WHERE id = 0").fetchall()
    assert [d[2] for d in dead] == ["parse", "features", "parse"]
    assert dead[0][0] == "this is not json" and "not a usable JSON message" in dead[0][1]
    assert "wrong length, expected 4 numbers" in dead[1][1]
    assert row == ({"sepal_length": 5.1, "petal_width": 0.2}, 0)
    probe = Probe(str(project / "queue.db"))
    assert probe.backlog() == 0 and probe.pending() == 0
    probe.close()


def test_predictions_published_to_another_topic(project: Path, cli: CliRunner, redis_url: str) -> None:
    write_pipeline(project, redis_url)
    spec = (project / "stream.yaml").read_text()
    (project / "stream.yaml").write_text(
        spec.replace(
            "sink: {kind: duckdb, path: warehouse.duckdb, table: iris_stream}",
            f'sink: {{kind: topic, url: "{redis_url}", topic: iris-predictions}}',
        )
    )
    iris_stream.write_jsonl(str(project / "iris.jsonl"), 120)
    cli("publish", "iris", "--url", redis_url, "--from", "iris.jsonl")
    result = cli("run", "stream.yaml", "--no-progress", "--max-messages", "120")
    assert "120 rows read, 120 predicted" in result.stdout
    assert f"output: topic iris-predictions at {redis_url}" in result.stdout
    topic = open_topic(redis_url, "iris-predictions")
    consumer = topic.consumer("check", "c")
    rows = [json.loads(m.body) for m in consumer.read(500, timeout=1.0)]
    topic.close()
    assert sorted(r["id"] for r in rows) == list(range(120))
    assert rows[0]["input"] == {"sepal_length": 5.1, "petal_width": 0.2} and rows[0]["predict"] == 0


def test_run_until_idle_on_an_empty_topic_ends(project: Path, cli: CliRunner) -> None:
    write_pipeline(project, "queue.db")
    result = cli("run", "stream.yaml", "--no-progress", "--until-idle", "0.3")
    assert "0 rows read" in result.stdout


def test_publish_errors(project: Path, cli: CliRunner) -> None:
    missing = cli("publish", "iris", "--from", "nope.jsonl", check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: publish --from nope.jsonl: file not found"
    rate = cli("publish", "iris", "--rate", "0", check=False, input="{}\n")
    assert rate.stderr.strip() == "error: publish --rate 0: expected a positive number of messages per second"
    scheme = cli("publish", "iris", "--url", "kafka://k:9092", check=False, input="{}\n")
    assert scheme.stderr.startswith("error: topic url 'kafka://k:9092': unsupported scheme 'kafka'")


def test_publish_defaults_to_queue_db_and_stdin(project: Path, cli: CliRunner) -> None:
    result = cli("publish", "iris", input='{"id": 1}\n\n{"id": 2}\n')
    assert result.stdout.startswith("published 2 messages to topic iris at queue.db")
    probe = Probe(str(project / "queue.db"))
    assert probe.backlog() == 2
    probe.close()
