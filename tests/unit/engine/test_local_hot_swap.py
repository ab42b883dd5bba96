"""The local engine with `watch: true`: swaps between batches, tags every row, survives bad versions.

The engine runs in-process over a source the test feeds one batch at a time, so the
test decides exactly when each batch exists relative to `ModelStore.add`.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.console import Console
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from inferline.engine.local import LocalEngine, RunSummary
from inferline.examples.iris import FEATURES
from inferline.io.base import SourceBatch
from inferline.models.store import ModelStore
from inferline.pipeline import parse_spec
from inferline.progress import print_summary

BATCH = 5


class FeedSource:
    """A bounded source whose batches the test hands over one at a time."""

    bounded = True

    def __init__(self) -> None:
        self.pending: queue.Queue[SourceBatch | None] = queue.Queue()
        self.acked: list[Any] = []

    def open(self) -> None:
        pass

    def batches(self) -> Iterator[SourceBatch]:
        while (batch := self.pending.get()) is not None:
            yield batch

    def ack(self, position: Any) -> None:
        self.acked.append(position)

    def progress_total(self) -> int | None:
        return None

    def close(self) -> None:
        pass


class Harness:
    """Feeds iris rows to a running engine and waits for each batch to be written."""

    def __init__(self, engine: LocalEngine, source: FeedSource) -> None:
        self.engine, self.source = engine, source
        iris = load_iris()
        self.features, self.sent = iris.data, 0
        self.summary: RunSummary | None = None
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.summary = self.engine.run()
        except BaseException as exc:
            self.failure = exc

    def start(self) -> None:
        self.thread.start()

    def feed(self) -> None:
        start = self.sent % len(self.features)
        rows = self.features[start : start + BATCH]
        ids = list(range(self.sent, self.sent + len(rows)))
        data = pa.RecordBatch.from_pydict(
            {"id": ids, **{name: rows[:, j] for j, name in enumerate(FEATURES)}}
        )
        keys = pa.array([str(i) for i in ids])
        self.source.pending.put(SourceBatch(data=data, keys=keys, position=ids[-1]))
        self.sent += len(rows)
        wait_for(lambda: self.engine.stats.rows_read >= self.sent or self.failure is not None)

    def finish(self) -> RunSummary:
        self.source.pending.put(None)
        self.thread.join(timeout=30)
        if self.failure is not None:
            raise self.failure
        assert self.summary is not None
        return self.summary


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - started


@pytest.fixture
def store(tmp_path: Path, iris_example: Path) -> ModelStore:
    store = ModelStore(str(tmp_path / "store"))
    store.add("iris", str(iris_example / "models" / "iris-1.joblib"), inputs=FEATURES)
    return store


def constant_model(path: Path, label: int) -> str:
    joblib.dump(
        DummyClassifier(strategy="constant", constant=label).fit(np.zeros((3, 4)), [0, 1, label]), path
    )
    return str(path)


def start_engine(
    tmp_path: Path,
    store: ModelStore,
    monkeypatch: pytest.MonkeyPatch,
    *,
    watch: bool,
    sink: str = "out.jsonl",
) -> Harness:
    spec = parse_spec(
        {
            "name": "swap",
            "source": {"kind": "jsonl", "path": "fed-by-the-test.jsonl"},
            "model": {"name": "iris", "store": store.root, "watch": watch, "watch_interval": 0.2},
            "key": "id",
            "sink": {"kind": sink.rsplit(".", 1)[1], "path": str(tmp_path / sink)},
            "batch": {"max_size": BATCH},
        }
    )
    source = FeedSource()
    monkeypatch.setattr("inferline.engine.local.make_source", lambda spec, **options: source)
    harness = Harness(LocalEngine(spec), source)
    harness.start()
    return harness


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_new_versions_swap_in_between_batches_and_bad_ones_are_reported(
    tmp_path: Path, store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = start_engine(tmp_path, store, monkeypatch, watch=True)
    for _ in range(3):
        harness.feed()
    store.add("iris", constant_model(tmp_path / "seven.joblib", 7))
    added = time.monotonic()
    while "iris/2" not in harness.engine.stats.model_ids:
        assert time.monotonic() - added < 5.0, "no row from iris/2 within 5 s of the add"
        harness.feed()
    for _ in range(2):
        harness.feed()
    store.add("iris", str(_corrupt(tmp_path)))
    wait_for(lambda: len(harness.engine.stats.model_errors) == 1)
    for _ in range(3):
        harness.feed()
    summary = harness.finish()

    rows = read_rows(tmp_path / "out.jsonl")
    assert [r["key"] for r in rows] == [str(i) for i in range(harness.sent)]  # none lost or duplicated
    models = [r["model_id"] for r in rows]
    first_v2 = models.index("iris/2")
    assert first_v2 >= 3 * BATCH and first_v2 % BATCH == 0  # swapped between batches
    assert set(models[:first_v2]) == {"iris/1"} and set(models[first_v2:]) == {"iris/2"}
    assert {r["prediction"] for r in rows[first_v2:]} == {7}
    v1 = store.load("iris", 1)
    before = np.array([[r[name] for name in FEATURES] for r in rows[:first_v2]])
    assert [r["prediction"] for r in rows[:first_v2]] == v1.predict(before).prediction.tolist()
    assert summary.model_ids == ["iris/1", "iris/2"]
    assert len(summary.model_errors) == 1
    assert "model iris/3: cannot load" in summary.model_errors[0]
    assert "still serving iris/2" in summary.model_errors[0]
    console = Console(record=True, width=400)
    print_summary(console, summary)
    assert f"model load error: {summary.model_errors[0]}" in console.export_text()


def test_without_watch_one_version_serves_the_whole_run(
    tmp_path: Path, store: ModelStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = start_engine(tmp_path, store, monkeypatch, watch=False)
    harness.feed()
    store.add("iris", constant_model(tmp_path / "seven.joblib", 7))
    store.pin("iris", 2)
    for _ in range(5):
        harness.feed()
    summary = harness.finish()
    rows = read_rows(tmp_path / "out.jsonl")
    assert len(rows) == 6 * BATCH
    assert {r["model_id"] for r in rows} == {"iris/1"} and summary.model_ids == ["iris/1"]
    assert 7 not in {r["prediction"] for r in rows}


def test_a_batch_run_into_parquet_takes_a_new_models_columns_and_dead_letters_a_type_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = load_iris(return_X_y=True)
    store = ModelStore(str(tmp_path / "store"))
    joblib.dump(SVC().fit(x, y), tmp_path / "svc.joblib")  # no predict_proba: no scores
    store.add("iris", str(tmp_path / "svc.joblib"), inputs=FEATURES)
    harness = start_engine(tmp_path, store, monkeypatch, watch=True, sink="out.parquet")
    assert harness.source.bounded  # a batch run, not a stream

    def swap_to(path: Path, model_id: str) -> None:
        store.add("iris", str(path), inputs=FEATURES)
        added = time.monotonic()
        while model_id not in harness.engine.stats.model_ids:
            assert time.monotonic() - added < 10.0, f"no row from {model_id} within 10 s of the add"
            harness.feed()

    harness.feed()
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), tmp_path / "lr.joblib")
    swap_to(tmp_path / "lr.joblib", "iris/2")
    harness.feed()
    named = DummyClassifier(strategy="constant", constant="setosa").fit(x, ["setosa", "other"] * 75)
    joblib.dump(named, tmp_path / "named.joblib")  # predicts text where the files hold integers
    swap_to(tmp_path / "named.joblib", "iris/3")
    summary = harness.finish()

    first, second = tmp_path / "out.parquet", tmp_path / "out.schema-2.parquet"
    table = pa.concat_tables([pq.read_table(first), pq.read_table(second)], promote_options="default")
    models = table.column("model_id").to_pylist()
    v1_file = pq.read_table(first)
    assert "scores" not in v1_file.schema.names and set(v1_file["model_id"].to_pylist()) == {"iris/1"}
    assert set(models[models.index("iris/2") :]) == {"iris/2"}  # the wider file holds every v2 row
    assert table.column("scores").null_count == models.index("iris/2")
    dead = read_rows(tmp_path / "out_errors.jsonl")
    assert summary.rows_dead == len(dead) > 0 and summary.rows_predicted == table.num_rows
    assert table.num_rows + len(dead) == harness.sent  # every row is in a file or dead-lettered
    assert {d["error"] for d in dead} == {
        f"{tmp_path / 'out.parquet'}: column 'prediction' is string but the file has int64; "
        "write to another file (--set sink.path=NEW.parquet) to keep both"
    }


def _corrupt(tmp_path: Path) -> Path:
    path = tmp_path / "iris-broken.joblib"
    path.write_bytes(b"\x80\x04 not really a pickle")
    return path
