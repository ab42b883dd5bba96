"""A file's columns against a batch's: what a Parquet or CSV sink does when a new model
writes other columns.

A file has one schema. A batch may lack some of its columns (a new model no longer writes
them: NULL there), bring columns it does not have (a new model's `scores`: the sink starts
a new file with the wider schema, `widened`), or bring a column whose type cannot be cast to
the file's (`SinkSchemaError`, and the engine dead-letters those rows).

Example:
    >>> import pyarrow as pa
    >>> file = pa.schema([("key", pa.string()), ("prediction", pa.int64())])
    >>> batch = pa.record_batch({"key": ["b"], "prediction": [2], "scores": [[0.4, 0.6]]})
    >>> widened(file, batch.schema).names
    ['key', 'prediction', 'scores']
    >>> conform(batch, file, where="out.parquet").to_pylist()
    [{'key': 'b', 'prediction': 2}]
"""

from __future__ import annotations

import pyarrow as pa

from inferline.errors import SinkSchemaError


def widened(schema: pa.Schema, batch: pa.Schema) -> pa.Schema | None:
    """`schema` with the columns only `batch` has appended, and a real type for a column the
    file could only call null (a model that failed on every row of the first batch); None
    when the file already has every column of `batch`."""
    fields = list(schema)
    wider = False
    for field in batch:
        at = schema.get_field_index(field.name)
        if at < 0:
            fields.append(field.with_nullable(True))
            wider = True
        elif pa.types.is_null(schema.field(at).type) and not pa.types.is_null(field.type):
            fields[at] = field.with_nullable(True)
            wider = True
    return pa.schema(fields, metadata=schema.metadata) if wider else None


def new_columns(schema: pa.Schema, batch: pa.Schema) -> list[str]:
    """The columns of `batch` that `schema` lacks (for the log line)."""
    return [name for name in batch.names if schema.get_field_index(name) < 0]


def conform(batch: pa.RecordBatch, schema: pa.Schema, *, where: str, fix: str = "") -> pa.RecordBatch:
    """`batch` as `schema`: its columns in that order, missing ones null, each cast to the
    file's type. Columns `schema` does not have are dropped (call `widened` first).

    Raises `SinkSchemaError` naming `where` and the column when a type cannot be cast,
    ending with `fix` (how to keep the new type).
    """
    if batch.schema == schema:
        return batch
    columns = []
    for field in schema:
        if batch.schema.get_field_index(field.name) < 0:
            columns.append(pa.nulls(batch.num_rows, field.type))
            continue
        column = batch.column(field.name)
        try:
            columns.append(column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            raise SinkSchemaError(
                f"{where}: column {field.name!r} is {column.type} but the file has {field.type}{fix}"
            ) from None
    return pa.RecordBatch.from_arrays(columns, schema=schema)
