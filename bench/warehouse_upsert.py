"""Upserting stream micro-batches into a large warehouse table: the cost of each design per batch.

    python bench/warehouse_upsert.py                        # a 1,000,000-row table
    python bench/warehouse_upsert.py --table-rows 10000000  # 10M rows (~700 MB of disk, minutes)
    python bench/warehouse_upsert.py --smoke                # tiny sizes: checks the benchmark runs

The same iris-like rows as bench/warehouse_storage.py. Each design starts from a table of
--table-rows rows (filled in one statement), then writes --batches batches of 4,096 new keys
(a stream) and --batches batches of keys already there, spread over the table (a re-run, or
messages redelivered after a crash), each batch in a transaction of its own, and reports the
median and worst milliseconds per batch:

  - `PRIMARY KEY on key` (the sink before): a plain INSERT (the index refuses a known key),
    INSERT OR REPLACE for known keys;
  - `no index, DELETE + INSERT`: DELETE WHERE key IN (the batch's keys), then INSERT, always;
  - `no index, DuckDBSink` (now): the sink itself, which keeps the keys' 64-bit hashes in
    memory: new keys are a plain INSERT, known ones DELETE + INSERT. Its first write reads
    the hashes of the whole table once (reported apart, with the memory they take).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from warehouse_storage import COLUMNS, batch  # noqa: E402

from inferline.io.duckdb import DuckDBSink  # noqa: E402

FILL = (
    "SELECT 'msg-' || i AS key, i AS id, round(random() * 8, 1) AS sepal_length, "
    "round(random() * 8, 1) AS sepal_width, round(random() * 8, 1) AS petal_length, "
    "round(random() * 8, 1) AS petal_width, (i % 3)::BIGINT AS prediction, 'iris/1' AS model_id "
    "FROM range({rows}) t(i)"
)


def fill(path: Path, rows: int, *, key: bool) -> float:
    started = time.perf_counter()
    with duckdb.connect(str(path)) as con:
        con.execute("SET enable_progress_bar = false")
        con.execute(f"CREATE TABLE t ({COLUMNS.format(pk=' PRIMARY KEY' if key else '')})")
        con.execute(f"INSERT INTO t {FILL.format(rows=rows)}")
    return time.perf_counter() - started


def sql_design(path: Path, new: str, known: str) -> Callable[[pa.Table, bool], None]:
    con = duckdb.connect(str(path))

    def write(rows: pa.Table, existing: bool) -> None:
        con.register("b", rows)
        con.execute("BEGIN")
        for statement in (known if existing else new).split(";"):
            con.execute(statement)
        con.execute("COMMIT")
        con.unregister("b")

    return write


def measure(
    write: Callable[[pa.Table, bool], None], table_rows: int, batches: int
) -> tuple[list[float], ...]:
    new, known = [], []
    for i in range(batches):
        rows = batch(table_rows + i * 4096, 4096)
        started = time.perf_counter()
        write(rows, False)
        new.append((time.perf_counter() - started) * 1000)
    for start in np.linspace(0, table_rows - 4096, batches).astype(int):
        rows = batch(int(start), 4096)
        started = time.perf_counter()
        write(rows, True)
        known.append((time.perf_counter() - started) * 1000)
    return new, known


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--table-rows", type=int, default=1_000_000)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.table_rows, args.batches = 20_000, 3
    print(f"upsert: 4,096-row batches into a table of {args.table_rows:,} rows, {args.batches} of each kind")
    print(f"{'design':<28} {'fill s':>7} {'new p50':>8} {'max':>7} {'known p50':>10} {'max':>7}  MB")
    with tempfile.TemporaryDirectory(prefix="inferline-bench-upsert-") as tmp:
        designs: list[tuple[str, bool, str, str]] = [
            (
                "PRIMARY KEY on key",
                True,
                "INSERT INTO t SELECT * FROM b",
                "INSERT OR REPLACE INTO t SELECT * FROM b",
            ),
            (
                "no index, DELETE + INSERT",
                False,
                "DELETE FROM t WHERE key IN (SELECT key FROM b); INSERT INTO t SELECT * FROM b",
                "DELETE FROM t WHERE key IN (SELECT key FROM b); INSERT INTO t SELECT * FROM b",
            ),
            ("no index, DuckDBSink", False, "", ""),
        ]
        for name, key, new_sql, known_sql in designs:
            path = Path(tmp) / f"{name.split(',')[0].replace(' ', '_')}-{len(new_sql)}.duckdb"
            filled = fill(path, args.table_rows, key=key)
            extra = ""
            if new_sql:
                write = sql_design(path, new_sql, known_sql)
            else:
                sink = DuckDBSink(str(path), "t")
                sink.open()
                first = batch(10 * args.table_rows, 1).combine_chunks().to_batches()[0]  # a new key
                started = time.perf_counter()
                sink.write(first)  # the first write reads the table's key hashes
                sink.commit()
                loaded = time.perf_counter() - started
                extra = f"  (first write, reading {args.table_rows:,} key hashes: {loaded * 1000:,.0f} ms, "
                extra += f"{args.table_rows * 8 / 1e6:,.0f} MB in memory)"

                def write(rows: pa.Table, existing: bool, sink: DuckDBSink = sink) -> None:
                    sink.write(rows.combine_chunks().to_batches()[0])
                    sink.commit()

            new, known = measure(write, args.table_rows, args.batches)
            if not new_sql:
                sink.close()
            size = path.stat().st_size / 1e6
            print(
                f"{name:<28} {filled:>7.1f} {statistics.median(new):>8.1f} {max(new):>7.1f} "
                f"{statistics.median(known):>10.1f} {max(known):>7.1f}  {size:,.0f}{extra}"
            )
            path.unlink()


if __name__ == "__main__":
    main()
