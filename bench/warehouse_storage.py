"""Storage of a streamed table: the DuckDB file after micro-batch commits vs one Parquet file.

    python bench/warehouse_storage.py                 # 1,000,000 rows in batches of 4,096
    python bench/warehouse_storage.py --rows 100000   # smaller

Rows are iris-like stream results (key, id, 4 doubles, prediction, model_id), committed one
batch at a time as a stream does. Variants: a table with a PRIMARY KEY on key (the sink's
tables until issue 22) and one without an index (the sink's tables now: the writer keeps the
keys' hashes in memory); with no turn ended during the run, and with one ended every 5
commits (a reader polling: DETACH checkpoints). Baseline: the same rows as one Parquet
file (pyarrow defaults, snappy).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

COLUMNS = (
    "key VARCHAR{pk}, id BIGINT, sepal_length DOUBLE, sepal_width DOUBLE, petal_length DOUBLE, "
    "petal_width DOUBLE, prediction BIGINT, model_id VARCHAR"
)


def batch(start: int, rows: int) -> pa.Table:
    rng = np.random.default_rng(start)
    x = np.round(rng.random((4, rows)) * 8, 1)
    return pa.table(
        {
            "key": [f"msg-{i}" for i in range(start, start + rows)],
            "id": np.arange(start, start + rows),
            "sepal_length": x[0],
            "sepal_width": x[1],
            "petal_length": x[2],
            "petal_width": x[3],
            "prediction": rng.integers(0, 3, rows),
            "model_id": ["iris/1"] * rows,
        }
    )


def streamed_size(
    path: Path, rows: int, batch_rows: int, *, key: bool, turn_every: int, hashed: bool = False
) -> int:
    db = duckdb.connect()
    db.execute(f"ATTACH '{path}' AS w").fetchall()
    columns = COLUMNS.format(pk=" PRIMARY KEY" if key else "")
    if hashed:  # the key's 64-bit hash in a column of its own, with the index on it
        columns += ", key_hash UBIGINT PRIMARY KEY"
    db.execute(f"CREATE TABLE w.t ({columns})").fetchall()
    for number, start in enumerate(range(0, rows, batch_rows), start=1):
        db.register("b", batch(start, min(batch_rows, rows - start)))
        db.execute("BEGIN").fetchall()
        db.execute(f"INSERT INTO w.t SELECT *{', hash(key)' if hashed else ''} FROM b").fetchall()
        db.execute("COMMIT").fetchall()
        db.unregister("b")
        if turn_every and number % turn_every == 0:
            db.execute("DETACH w").fetchall()
            db.execute(f"ATTACH '{path}' AS w").fetchall()
    db.execute("DETACH w").fetchall()
    db.close()
    wal = Path(str(path) + ".wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def sink_size(path: Path, rows: int, batch_rows: int) -> int:
    """The same batches through `DuckDBSink` itself, committed one by one (no reader)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from inferline.io.duckdb import DuckDBSink

    sink = DuckDBSink(str(path), "t")
    sink.open()
    try:
        for start in range(0, rows, batch_rows):
            sink.write(batch(start, min(batch_rows, rows - start)).combine_chunks().to_batches()[0])
            sink.commit()
    finally:
        sink.close()
    wal = Path(str(path) + ".wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-rows", type=int, default=4096)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the benchmark runs")
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.batch_rows = 20_000, 4096
    with tempfile.TemporaryDirectory(prefix="inferline-bench-storage-") as tmp:
        parquet = Path(tmp) / "one.parquet"
        pq.write_table(
            pa.concat_tables(
                batch(s, min(args.batch_rows, args.rows - s)) for s in range(0, args.rows, args.batch_rows)
            ),
            parquet,
        )
        baseline = os.path.getsize(parquet)
        print(
            f"storage: {args.rows:,} rows in batches of {args.batch_rows:,}; "
            f"one Parquet file {baseline / 1e6:.1f} MB"
        )
        print(f"{'table':<30} {'turns ended':<16} {'MB':>6} {'vs Parquet':>10}")
        for key in (True, False):
            for every in (0, 5):
                path = Path(tmp) / f"w-{key}-{every}.duckdb"
                size = streamed_size(path, args.rows, args.batch_rows, key=key, turn_every=every)
                name = "PRIMARY KEY on key (before)" if key else "no index (the sink now)"
                turns = f"every {every} commits" if every else "never"
                print(f"{name:<30} {turns:<16} {size / 1e6:>6.1f} {size / baseline:>10.2f}")
        size = streamed_size(
            Path(tmp) / "hashed.duckdb", args.rows, args.batch_rows, key=False, turn_every=5, hashed=True
        )
        print(
            f"{'PRIMARY KEY on hash(key)':<30} {'every 5 commits':<16} "
            f"{size / 1e6:>6.1f} {size / baseline:>10.2f}"
        )
        size = sink_size(Path(tmp) / "sink.duckdb", args.rows, args.batch_rows)
        print(f"{'DuckDBSink itself':<30} {'never':<16} {size / 1e6:>6.1f} {size / baseline:>10.2f}")


if __name__ == "__main__":
    main()
