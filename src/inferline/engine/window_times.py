"""Event times of `window:` rows, shared by the local engine and the Beam translation.

Example:
    >>> times = event_times(batch, "ts", ingest_time=time.time(), con=con, origin="s.yaml")  # doctest: +SKIP
"""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inferline.errors import WindowError


def event_times(
    results: pa.RecordBatch,
    column_name: str | None,
    *,
    ingest_time: float,
    con: duckdb.DuckDBPyConnection,
    origin: str,
) -> np.ndarray:
    """Each row's event time in µs since the epoch: `column_name` (a timestamp, ISO 8601 text
    or epoch seconds; text is parsed by DuckDB on `con`), else `ingest_time` for every row."""
    if column_name is None:
        return np.full(results.num_rows, round(ingest_time * 1_000_000), dtype=np.int64)
    if column_name not in results.schema.names:
        raise WindowError(
            f"{origin}: window.time: column {column_name!r} not found in the result rows "
            f"(columns: {', '.join(results.schema.names)}); keep it with keep: or output:"
        )
    column = results.column(column_name)
    if pa.types.is_timestamp(column.type):
        micros = column.cast(pa.timestamp("us", tz=column.type.tz)).cast(pa.int64())
    elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        micros = pc.round(pc.multiply(column.cast(pa.float64()), 1_000_000)).cast(pa.int64())
    else:
        micros = _parse_times(con, column)
    if micros.null_count:
        index = int(pc.index(pc.is_null(micros), True).as_py())
        raise WindowError(
            f"{origin}: window.time: row {results.column('key')[index].as_py()}: "
            f"{column[index].as_py()!r} is not a time; expected a timestamp, ISO 8601 text "
            "or seconds since the epoch"
        )
    return np.asarray(micros.to_numpy(zero_copy_only=False), dtype=np.int64)


def _parse_times(con: duckdb.DuckDBPyConnection, column: pa.Array) -> pa.Array:
    con.register("_inferline_times", pa.table({"t": column.cast(pa.string())}))
    try:
        parsed = con.sql(
            "SELECT coalesce(epoch_us(try_cast(t AS TIMESTAMPTZ)), "
            "epoch_us(try_cast(t AS TIMESTAMP))) AS t FROM _inferline_times"
        ).to_arrow_table()
    finally:
        con.unregister("_inferline_times")
    return parsed.column("t").combine_chunks().cast(pa.int64())
