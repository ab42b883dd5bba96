"""DuckDB sink: the upsert writer vs a plain INSERT into a table without a key, same batches.

    python bench/duckdb_sink.py            # 250 x 4,096 rows, a 4M-row table; best of 3
    python bench/duckdb_sink.py --smoke    # 5 x 512 rows, a 10k-row table, once: checks it runs

Every writer gets the same Arrow batches of iris-like results and commits after each batch,
as the local engine does (streams must commit before they ack). Two result shapes: `labels`
(key, 4 features, prediction, model_id) and `scores` (the same plus a FLOAT[] of class
scores, what ONNX classifiers give). Writers, each into its own new file:

- `insert, no key` (baseline): plain INSERT into a table without a primary key (no upsert);
- `parquet append`: pyarrow's ParquetWriter, for scale;
- `upsert before`: the sink as it was (DESCRIBE + INSERT OR REPLACE for every batch);
- `DuckDBSink`: the sink as it is.

Each upsert writer runs twice over the same file: `first run` (every key new) and `re-run`
(every key already there: each row is replaced). Ratios are against the baseline's time.

Then the two upsert writers write 10 batches into a copy of a big existing table
(`--table-rows`, as a long-running stream leaves it): batches of new keys (a stream going on)
and of keys the table holds (a re-run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from inferline.io.duckdb import DuckDBSink, _dedupe_last, quote  # noqa: E402


def make_batches(count: int, rows: int, *, scores: bool, first: int = 0) -> list[pa.RecordBatch]:
    """`count` batches of results for keys `first`, `first + 1`, ..."""
    rng = np.random.default_rng(0)
    batches = []
    for b in range(count):
        start = first + b * rows
        columns: dict[str, pa.Array] = {
            "key": pa.array([f"data/iris.csv#{i}" for i in range(start, start + rows)]),
        }
        for name in ("sepal_length", "sepal_width", "petal_length", "petal_width"):
            columns[name] = pa.array(np.round(rng.uniform(0, 8, rows), 1))
        columns["prediction"] = pa.array(rng.integers(0, 3, rows))
        if scores:
            offsets = pa.array(np.arange(0, 3 * rows + 1, 3, dtype=np.int32))
            values = pa.array(rng.random(3 * rows).astype(np.float32))
            columns["scores"] = pa.ListArray.from_arrays(offsets, values)
        columns["model_id"] = pa.array(["iris/1"] * rows)
        batches.append(pa.RecordBatch.from_pydict(columns))
    return batches


class BeforeSink:
    """The sink's write path before this benchmark: DESCRIBE and INSERT OR REPLACE per batch,
    into a table with a PRIMARY KEY on key (the sink made its tables so until issue 22)."""

    def __init__(self, path: str, table: str) -> None:
        self.inner = DuckDBSink(path, table)

    def open(self) -> None:
        self.inner.open()

    def write(self, batch: pa.RecordBatch) -> None:
        sink = self.inner
        batch = _dedupe_last(batch, sink.key)
        con = sink.con
        sink._hold()  # the sink holds the warehouse file only from a write to its commit
        con.register("_inferline_batch", batch)
        try:
            rows = con.execute("DESCRIBE _inferline_batch").fetchall()
            incoming = {name: dtype for name, dtype, *_ in rows}
            if sink._columns is None:
                columns = ", ".join(f"{quote(n)} {t}" for n, t in incoming.items())
                con.execute(f"CREATE TABLE {quote(sink.table)} ({columns}, PRIMARY KEY ({quote(sink.key)}))")
                sink._columns, sink._unique_key = dict(incoming), True
            else:
                sink._check_compatible(incoming)
            con.execute("BEGIN TRANSACTION")
            sink._in_transaction = True
            names = ", ".join(quote(n) for n in incoming)
            con.execute(
                f"INSERT OR REPLACE INTO {quote(sink.table)} ({names}) SELECT {names} FROM _inferline_batch"
            )
        finally:
            con.unregister("_inferline_batch")

    def commit(self) -> None:
        self.inner.commit()

    def close(self) -> None:
        self.inner.close()


def timed_sink(make: Callable[[], DuckDBSink | BeforeSink], batches: list[pa.RecordBatch]) -> float:
    sink = make()
    started = time.perf_counter()
    sink.open()
    for batch in batches:
        sink.write(batch)
        sink.commit()
    sink.close()
    return time.perf_counter() - started


def timed_plain_insert(path: str, batches: list[pa.RecordBatch]) -> float:
    started = time.perf_counter()
    con = duckdb.connect(path)
    con.register("_b", batches[0])
    con.execute("CREATE TABLE results AS SELECT * FROM _b LIMIT 0")
    con.unregister("_b")
    for batch in batches:
        con.register("_b", batch)
        con.execute("BEGIN TRANSACTION")
        con.execute("INSERT INTO results SELECT * FROM _b")
        con.execute("COMMIT")
        con.unregister("_b")
    con.close()
    return time.perf_counter() - started


def timed_parquet(path: str, batches: list[pa.RecordBatch]) -> float:
    started = time.perf_counter()
    with pq.ParquetWriter(path, batches[0].schema) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return time.perf_counter() - started


def one_round(tmp: Path, shape: str, batches: list[pa.RecordBatch]) -> list[tuple[str, float]]:
    rows = sum(b.num_rows for b in batches)
    before_db, after_db = str(tmp / f"{shape}-before.duckdb"), str(tmp / f"{shape}-after.duckdb")
    figures = [
        ("insert, no key (baseline)", timed_plain_insert(str(tmp / f"{shape}-plain.duckdb"), batches)),
        ("parquet append", timed_parquet(str(tmp / f"{shape}.parquet"), batches)),
        ("upsert before, first run", timed_sink(lambda: BeforeSink(before_db, "results"), batches)),
        ("DuckDBSink, first run", timed_sink(lambda: DuckDBSink(after_db, "results"), batches)),
        ("upsert before, re-run", timed_sink(lambda: BeforeSink(before_db, "results"), batches)),
        ("DuckDBSink, re-run", timed_sink(lambda: DuckDBSink(after_db, "results"), batches)),
    ]
    for path in (before_db, after_db):
        with duckdb.connect(path) as con:
            ((count, keys),) = con.execute("SELECT count(*), count(DISTINCT key) FROM results").fetchall()
        if count != rows or keys != rows:
            raise SystemExit(f"{path}: {count} rows, {keys} keys; expected {rows} of each")
    return figures


def bench_shape(tmp: Path, shape: str, batches: list[pa.RecordBatch], repeat: int) -> None:
    rows = sum(b.num_rows for b in batches)
    best: dict[str, float] = {}
    for r in range(repeat):
        # Rounds interleave the writers, so a burst of load elsewhere hits them alike.
        (tmp / f"{shape}-{r}").mkdir()
        for name, seconds in one_round(tmp / f"{shape}-{r}", shape, batches):
            best[name] = min(seconds, best.get(name, seconds))
    figures = list(best.items())
    base = figures[0][1]
    per_batch = 1000 / len(batches)
    print(
        f"\n{shape}: {len(batches)} batches x {batches[0].num_rows:,} rows, commit per batch, "
        f"best of {repeat}"
    )
    print(f"{'writer':<28} {'seconds':>8} {'ms/batch':>9} {'rows/s':>11} {'time vs baseline':>17}")
    for name, seconds in figures:
        print(
            f"{name:<28} {seconds:8.2f} {seconds * per_batch:9.2f} {rows / seconds:11,.0f} "
            f"{seconds / base:16.2f}x"
        )
    named = dict(figures)
    for run in ("first run", "re-run"):
        speedup = named[f"upsert before, {run}"] / named[f"DuckDBSink, {run}"]
        print(f"DuckDBSink {run} speed-up over before: {speedup:.2f}x")


def big_table(path: Path, rows: int, *, scores: bool, key: bool) -> None:
    """A table of `rows` results with the sink's layout, as a long-running stream leaves it
    (`key`: with the PRIMARY KEY the sink gave its tables before issue 22)."""
    sink = BeforeSink(str(path), "results") if key else DuckDBSink(str(path), "results")
    sink.open()
    sink.write(make_batches(1, 1, scores=scores)[0])
    sink.commit()
    sink.close()
    score = ", [0.1, 0.2, 0.7]::FLOAT[]" if scores else ""
    with duckdb.connect(str(path)) as con:
        con.execute(
            f"INSERT INTO results SELECT 'data/iris.csv#' || i, 5.1, 3.5, 1.4, 0.2, 0{score}, "
            f"'iris/1' FROM range(1, {rows}) t(i)"
        )


def timed_on_copy(
    base: Path, make: Callable[[str], DuckDBSink | BeforeSink], batches: list[pa.RecordBatch]
) -> float:
    copy = base.with_name(f"copy-{base.name}")
    shutil.copyfile(base, copy)
    seconds = timed_sink(lambda: make(str(copy)), batches)
    copy.unlink()
    return seconds


def bench_big_table(tmp: Path, shape: str, table_rows: int, count: int, rows: int, repeat: int) -> None:
    bases = {True: tmp / f"{shape}-big-key.duckdb", False: tmp / f"{shape}-big.duckdb"}
    for key, base in bases.items():
        big_table(base, table_rows, scores=shape == "scores", key=key)
    cases = {
        "new keys": make_batches(count, rows, scores=shape == "scores", first=table_rows),
        "known keys": make_batches(count, rows, scores=shape == "scores"),
    }
    best: dict[tuple[str, str], float] = {}
    for _ in range(repeat):
        for case, batches in cases.items():
            for writer, make, base in (
                ("upsert before", lambda p: BeforeSink(p, "results"), bases[True]),
                ("DuckDBSink", lambda p: DuckDBSink(p, "results"), bases[False]),
            ):
                seconds = timed_on_copy(base, make, batches)
                best[case, writer] = min(seconds, best.get((case, writer), seconds))
    print(
        f"\n{shape}: {count} batches x {rows:,} rows into a table of {table_rows:,} rows, "
        f"commit per batch, best of {repeat}"
    )
    print(f"{'batches of':<12} {'upsert before ms/batch':>23} {'DuckDBSink ms/batch':>20} {'speed-up':>9}")
    for case in cases:
        before, after = best[case, "upsert before"], best[case, "DuckDBSink"]
        print(f"{case:<12} {1000 * before / count:23.1f} {1000 * after / count:20.1f} {before / after:8.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batches", type=int, default=250)
    parser.add_argument("--rows", type=int, default=4096, help="rows per batch")
    parser.add_argument("--shape", choices=["labels", "scores", "both"], default="both")
    parser.add_argument("--table-rows", type=int, default=4_000_000, help="rows of the big existing table")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best time of each writer counts")
    parser.add_argument("--smoke", action="store_true", help="5 batches of 512 rows, one round")
    args = parser.parse_args()
    count, repeat = (5, 1) if args.smoke else (args.batches, args.repeat)
    if args.smoke:
        args.rows = 512
    shapes = ["labels", "scores"] if args.shape == "both" else [args.shape]
    print(f"duckdb {duckdb.__version__}, pyarrow {pa.__version__}, cores {os.cpu_count()}")
    with tempfile.TemporaryDirectory(prefix="inferline-bench-duckdb-") as tmp:
        for shape in shapes:
            batches = make_batches(count, args.rows, scores=shape == "scores")
            bench_shape(Path(tmp), shape, batches, repeat)
        table_rows = 10_000 if args.smoke else args.table_rows
        for shape in shapes:
            bench_big_table(Path(tmp), shape, table_rows, count if args.smoke else 10, args.rows, repeat)


if __name__ == "__main__":
    main()
