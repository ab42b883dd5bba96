"""Poison messages on a real stream: a bad first message, a null feature, integer features
first, messages without a key; each is dead-lettered alone and the stream goes on."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from inferline.examples import iris_stream
from tests.conftest import CliRunner
from tests.e2e.streaming import table_ids, write_pipeline


def test_bad_first_null_int_first_and_keyless_messages_are_dead_lettered_alone(
    project: Path, cli: CliRunner
) -> None:
    write_pipeline(project, "queue.db", max_size=1)  # every message is a batch of its own
    spec = (project / "stream.yaml").read_text()
    (project / "stream.yaml").write_text("key: id\n" + spec)
    messages = list(iris_stream.messages(60))
    lines = [json.dumps(m) for m in messages]
    lines[0] = json.dumps({"id": 0, "feature": "5.1,3.5,1.4,0.2"})  # first, and the wrong type
    lines[1] = json.dumps({"id": 1, "feature": None})
    lines[2] = json.dumps({"id": 2, "feature": [5, 3, 1, 0]})  # integers before any float
    lines[3] = json.dumps({"feature": messages[3]["feature"]})  # no key
    lines[4] = json.dumps({"id": None, "feature": messages[4]["feature"]})
    lines[9] = "not json"  # message 10 on the queue...
    lines[10] = json.dumps({"id": 10, "feature": [1.0, 2.0]})  # ...and payload id 10: both land
    cli("publish", "iris", "--url", "queue.db", input="\n".join(lines) + "\n")
    result = cli("run", "stream.yaml", "--no-progress", "--until-idle", "1")
    assert "60 rows read, 54 predicted, 6 dead-lettered" in result.stdout
    assert table_ids(project) == [2, *range(5, 9), *range(11, 60)]
    with duckdb.connect(str(project / "warehouse.duckdb"), read_only=True) as con:
        dead = dict(con.sql("SELECT key, error FROM iris_stream_errors").fetchall())
        (row,) = con.sql("SELECT input FROM iris_stream WHERE id = 2").fetchall()
    assert row == ({"sepal_length": 5.0, "petal_width": 0.0},)
    assert sorted(dead, key=int) == ["1", "2", "4", "5", "10", "11"]  # queue message ids
    assert dead["1"].endswith("field 'feature' is text, expected numbers (a model input)")
    assert dead["2"].endswith("field 'feature' is empty, expected numbers (a model input)")
    assert dead["4"].endswith("no 'id' (the pipeline's key:), or it is null")
    assert dead["5"].endswith("no 'id' (the pipeline's key:), or it is null")
    assert dead["11"].startswith("model iris/1 failed")  # alone in its batch: 2 features, not 4


CRASHING = """\
name: crash-loop
source: {kind: topic, url: queue.db, topic: iris, options: {max_deliveries: 3}}
key: id
steps: [{map: "crashy:step"}]
sink: {kind: duckdb, path: warehouse.duckdb, table: rows}
batch: {max_size: 20, max_wait_ms: 10}
"""

CRASHY = """\
import os


def step(batch):
    if 13 in batch.column("id").to_pylist():
        os._exit(3)  # what a segfaulting library does to the consumer: no exception, no cleanup
    return batch
"""


def test_a_message_that_kills_the_consumer_on_every_delivery_is_dead_lettered_after_the_limit(
    project: Path, cli: CliRunner
) -> None:
    (project / "crash.yaml").write_text(CRASHING)
    (project / "crashy.py").write_text(CRASHY)
    cli("publish", "iris", "--url", "queue.db", input="".join(f'{{"id": {i}}}\n' for i in range(40)))
    codes = []
    for _ in range(4):  # a supervisor restarting the consumer each time it dies
        run = cli("run", "crash.yaml", "--no-progress", "--until-idle", "1", check=False)
        codes.append(run.returncode)
        if run.returncode == 0:
            break
    # Deliveries 1 and 2 crash with their whole batch; from the 3rd each message is a batch of
    # its own (0..12 commit, 13 crashes); the 4th delivery of 13 is over max_deliveries (3).
    assert codes == [3, 3, 3, 0], run.stderr
    assert "1 dead-lettered" in run.stdout, run.stdout
    with duckdb.connect(str(project / "warehouse.duckdb"), read_only=True) as con:
        ids = [r[0] for r in con.sql("SELECT id FROM rows ORDER BY id").fetchall()]
        dead = con.sql("SELECT key, error FROM rows_errors").fetchall()
    assert ids == [i for i in range(40) if i != 13]
    assert [key for key, _ in dead] == ["14"]  # payload id 13 is the queue's 14th message
    assert dead[0][1].endswith(
        "delivered 4 times and never committed (it crashed or stalled the consumer each time); "
        "over source.options.max_deliveries (3)"
    )
