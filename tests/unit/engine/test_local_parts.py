"""The local engine on a topic into file sinks: `split:` sides are part directories too, and
their acks wait for the parts (in-process, on the embedded queue, no model)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import duckdb

from inferline.engine.local import run_pipeline
from inferline.io.parts import JOURNAL, part_files
from inferline.io.topics import open_topic
from inferline.pipeline import parse_spec


def test_a_split_stream_writes_parts_on_each_side_and_every_message_once(tmp_path: Path) -> None:
    url = str(tmp_path / "queue.db")
    topic = open_topic(url, "rows")
    topic.open()
    topic.publish([json.dumps({"id": i, "x": i * 0.5}).encode() for i in range(60)])
    topic.close()
    out = tmp_path / "out"
    spec = parse_spec(
        {
            "name": "split-parts",
            "source": {"kind": "topic", "url": url, "topic": "rows"},
            "key": "id",
            "sink": {
                "kind": "parquet",
                "path": str(out),
                "split": {"train": 0.5, "eval": 0.5},
                "options": {"roll_rows": 10},
            },
            "batch": {"max_size": 7, "max_wait_ms": 5},
        }
    )
    summary = run_pipeline(spec, until_idle=0.5)
    assert summary.rows_read == 60
    sides = [out / "train.parquet", out / "eval.parquet"]
    parts = [part_files(str(side)) for side in sides]
    assert all(len(p) >= 2 for p in parts), [os.listdir(s) for s in sides]
    assert (sides[0] / JOURNAL).exists()  # one journal for the stream, in the first side
    with duckdb.connect() as con:
        ids = con.sql(
            f"SELECT id FROM read_parquet('{out}/*.parquet/*.parquet', union_by_name = true) ORDER BY id"
        ).fetchall()
    assert [i for (i,) in ids] == list(range(60))
    probe = open_topic(url, "rows")
    consumer = probe.consumer("inferline", "probe")
    assert consumer.pending() == 0 and consumer.backlog() == 0
    consumer.close()
    probe.close()
