"""`window:` under `--runner beam`: the same spec over the same out-of-order file gives the same
windowed rows on Beam's DirectRunner as on the local engine, and the hand-computed ones."""

from __future__ import annotations

import datetime
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from inferline.engine.local import run_pipeline
from inferline.pipeline import load_spec
from tests.conftest import CliRunner

BASE = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)
# Iris flowers the model surely gets right: setosa (0), versicolor (1), virginica (2).
FLOWERS = {0: [5.1, 3.5, 1.4, 0.2], 1: [7.0, 3.2, 4.7, 1.4], 2: [6.3, 3.3, 6.0, 2.5]}

SPEC = """\
name: payments
source: {kind: jsonl, path: events.jsonl}
model: {name: iris, uri: examples/iris/models/iris-*.onnx, inputs: feature}
keep: [id, ts, merchant]
sink: {kind: parquet, path: out/rows.parquet}
window:
  kind: sliding
  size: 10s
  every: 5s
  time: ts
  allowed_lateness: 10s
  group_by: [merchant]
  aggregates:
    n: "count(*)"
    fraud_rate: "avg(prediction = 1)"
    ids: "list(id ORDER BY id)"
  sink: {kind: parquet, path: out/windows.parquet}
batch: {max_size: 16, max_wait_ms: 20}
"""


def events() -> list[tuple[int, float, str, int]]:
    """(id, event second, merchant, class): 80 events over 40 s, shuffled by up to ~8 s
    (within the 10 s of lateness, so the local engine counts every one, as Beam does)."""
    rng = random.Random(23)
    made = [
        (i, round(i * 0.5 + rng.random() * 0.4, 3), rng.choice("ab"), rng.randrange(3)) for i in range(80)
    ]
    return sorted(made, key=lambda e: e[1] + rng.uniform(0, 8))


def expected(rows: list[tuple[int, float, str, int]]) -> list[tuple[Any, ...]]:
    """Sliding 10 s windows every 5 s, by hand: a row counts in [s, s + 10) for s = 5k <= t < s + 10."""
    windows: dict[tuple[int, str], list[tuple[int, int]]] = defaultdict(list)
    for i, second, merchant, cls in rows:
        last = int(second // 5) * 5
        for start in (last, last - 5):
            windows[(start, merchant)].append((i, cls))
    return sorted(
        (
            start,
            start + 10,
            merchant,
            len(got),
            sum(c == 1 for _, c in got) / len(got),
            sorted(i for i, _ in got),
        )
        for (start, merchant), got in windows.items()
    )


WHEN = ("window_start", "window_end")


def seconds(value: datetime.datetime) -> int:
    return int((value.replace(tzinfo=datetime.timezone.utc) - BASE).total_seconds())


def found(path: str) -> list[dict[str, Any]]:
    return sorted(pq.read_table(path).to_pylist(), key=lambda r: r["key"])


def test_sliding_windows_are_the_same_on_beam_and_locally(project: Path, cli: CliRunner) -> None:
    rows = events()
    assert [e[0] for e in rows] != sorted(e[0] for e in rows)  # out of order
    with open("events.jsonl", "w", encoding="utf-8") as out:
        for i, second, merchant, cls in rows:
            stamp = (BASE + datetime.timedelta(seconds=second)).isoformat().replace("+00:00", "Z")
            out.write(
                json.dumps({"id": i, "ts": stamp, "merchant": merchant, "feature": FLOWERS[cls]}) + "\n"
            )
    Path("payments.yaml").write_text(SPEC)
    # The local engine in this process (the CLI's own path is covered by test_stream_windows).
    local_spec = load_spec("payments.yaml", overrides=["window.sink.path=out/local_windows.parquet"])
    summary = run_pipeline(local_spec)
    assert (summary.rows_predicted, summary.rows_late) == (80, 0)
    beam = cli("run", "payments.yaml", "--runner", "beam", "--", "--direct_num_workers=1").stdout
    assert "80 rows read, 80 predicted, 0 dead-lettered" in beam
    local_rows, beam_rows = found("out/local_windows.parquet"), found("out/windows.parquet")
    assert f"windows: {len(beam_rows)} rows to out/windows.parquet" in beam

    by_hand = [
        (
            seconds(r["window_start"]),
            seconds(r["window_end"]),
            r["merchant"],
            r["n"],
            r["fraud_rate"],
            r["ids"],
        )
        for r in local_rows
    ]
    assert sorted(by_hand) == expected(rows)
    first = local_rows[0]
    start_us, end_us = (int(first[c].replace(tzinfo=datetime.timezone.utc).timestamp()) * 10**6 for c in WHEN)
    assert first["key"] == f"{start_us}|{end_us}|{first['merchant']}"
    assert beam_rows == local_rows
    assert pq.read_schema("out/windows.parquet") == pq.read_schema("out/local_windows.parquet")
