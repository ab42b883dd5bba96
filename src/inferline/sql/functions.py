"""The SQL functions: `predict`, `predict_scores`, `predict_label`, `decode_image` and the image
functions `resize_image`, `convert_color_space`, `convert_image_type` (sql/image_functions.py).

DuckDB's Python UDFs take a fixed number of arguments and cannot be overloaded, so each
public name is a typed TEMP MACRO with one overload per arity that packs the feature
columns into a `DOUBLE[]` (vectorised, in DuckDB) and calls one Arrow UDF:

    predict('iris', sepal_length, sepal_width, petal_length, petal_width)
    predict('iris', features)                       -- a DOUBLE[] column
    predict('digits', decode_image(data, 28, 28))   -- an image: FLOAT[][][]

Each UDF call gets a whole chunk (DuckDB's 2048 rows) and makes one model call.
`predict` returns DOUBLE (class numbers or values), `predict_label` VARCHAR (any label),
`predict_scores` DOUBLE[] (class probabilities, or a model's raw output row).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from duckdb.func import ARROW, SPECIAL

from inferline.errors import InferlineError, SqlError, require
from inferline.models.base import LoadedModel, Prediction
from inferline.sql import calls, dialect, fused, preprocessing
from inferline.sql import image_functions as images
from inferline.sql.decode import IMAGE_TYPE, chunk_jobs, decode_column, images_to_arrow
from inferline.sql.resolver import ModelResolver
from inferline.sql.tensors import combine, complete_rows, list_tensor, model_layout, scatter

# More feature columns than this: pass one list, predict('m', [a, b, ...]) or a DOUBLE[] column.
MAX_ARITY = 32

OUTPUTS: dict[str, tuple[str, pa.DataType]] = {
    "predict": ("DOUBLE", pa.float64()),
    "predict_scores": ("DOUBLE[]", pa.list_(pa.float64())),
    "predict_label": ("VARCHAR", pa.string()),
}

UdfErrors = list[InferlineError]


def register(con: duckdb.DuckDBPyConnection, resolver: ModelResolver, errors: UdfErrors) -> None:
    """Create the functions on `con` (UDFs plus TEMP macros: nothing is stored in the file)."""
    for public, (sql_type, arrow_type) in OUTPUTS.items():
        body = _predict_udf(resolver, public, arrow_type, errors)
        for suffix, input_type in (("", "DOUBLE[]"), ("_image", IMAGE_TYPE)):
            con.create_function(
                f"__inferline_{public}{suffix}",
                body,
                ["VARCHAR", input_type],
                sql_type,
                type=ARROW,
                null_handling=SPECIAL,
            )
        con.execute(_macro_sql(public))
        con.create_function(  # predict(m, decode_image(...)) rewritten by fused.fuse_native_calls
            f"__inferline_{public}_decoding",
            _guard(_decoding_run(resolver, public, arrow_type), errors),
            ["VARCHAR", "BLOB", "INTEGER", "INTEGER"],
            sql_type,
            type=ARROW,
            null_handling=SPECIAL,
        )
    con.create_function(
        "__inferline_decode_image",
        _guard(decode_column, errors),
        ["BLOB", "INTEGER", "INTEGER"],
        IMAGE_TYPE,
        type=ARROW,
        null_handling=SPECIAL,
    )
    con.execute(
        "CREATE OR REPLACE TEMP MACRO decode_image(data) AS __inferline_decode_image(data, 0, 0), "
        "(data, height, width) AS __inferline_decode_image(data, height, width)"
    )
    _register_image_functions(con, errors)
    con.create_function(
        "__inferline_hash_bucketize",
        _guard(_hash_buckets, errors),
        ["VARCHAR", "BIGINT"],
        "BIGINT",
        type=ARROW,
        null_handling=SPECIAL,
    )
    con.execute(preprocessing.MACROS)
    con.execute(dialect.MACROS)


def _hash_buckets(values: pa.Array, sizes: pa.Array) -> pa.Array:
    """ML.HASH_BUCKETIZE: abs(FARM_FINGERPRINT(value) mod size), as BigQuery's FARM_FINGERPRINT
    (farmhash Fingerprint64 as a signed INT64); NULL stays NULL."""
    farmhash: Any = require("farmhash", "sql")
    out: list[int | None] = []
    for value, size in zip(values.to_pylist(), sizes.to_pylist(), strict=True):
        if value is None or size is None:
            out.append(None)
            continue
        if size < 1:
            raise SqlError(f"ML.HASH_BUCKETIZE: hash_bucket_size must be at least 1, got {size}")
        fingerprint = int(farmhash.fingerprint64(value))
        signed = fingerprint - 2**64 if fingerprint >= 2**63 else fingerprint
        out.append(abs(signed) % size)  # = ABS(MOD(signed, size)): MOD keeps the sign
    return pa.array(out, pa.int64())


def _register_image_functions(con: duckdb.DuckDBPyConnection, errors: UdfErrors) -> None:
    """resize_image, convert_color_space, convert_image_type (BigQuery ML's, sql/image_functions.py)."""
    udfs: list[tuple[str, Callable[..., pa.Array], list[Any], str]] = [
        ("resize_image", images.resize_column, [IMAGE_TYPE, "INTEGER", "INTEGER", "BOOLEAN"], IMAGE_TYPE),
        ("convert_color_space", images.color_space_column, [IMAGE_TYPE, "VARCHAR"], IMAGE_TYPE),
        ("convert_image_type", images.image_type_column, [IMAGE_TYPE], "INTEGER[][][]"),
    ]
    for name, body, params, result in udfs:
        con.create_function(
            f"__inferline_{name}", _guard(body, errors), params, result, type=ARROW, null_handling=SPECIAL
        )
    con.execute(
        "CREATE OR REPLACE TEMP MACRO resize_image(image, height, width) AS "
        "__inferline_resize_image(image, height, width, false), "
        "(image, height, width, preserve_aspect_ratio) AS "
        "__inferline_resize_image(image, height, width, preserve_aspect_ratio)"
    )
    con.execute(
        "CREATE OR REPLACE TEMP MACRO convert_color_space(image, space) AS "
        "__inferline_convert_color_space(image, space)"
    )
    con.execute(
        "CREATE OR REPLACE TEMP MACRO convert_image_type(image) AS __inferline_convert_image_type(image)"
    )


def _macro_sql(public: str) -> str:
    udf = f"__inferline_{public}"
    overloads = [
        f"(model VARCHAR, x DOUBLE[]) AS {udf}(model, x)",
        f"(model VARCHAR, x {IMAGE_TYPE}) AS {udf}_image(model, x)",
    ]
    for arity in range(1, MAX_ARITY + 1):
        params = ", ".join(f"x{i} DOUBLE" for i in range(arity))
        values = ", ".join(f"x{i}" for i in range(arity))
        overloads.append(f"(model VARCHAR, {params}) AS {udf}(model, [{values}])")
    return f"CREATE OR REPLACE TEMP MACRO {public}" + ", ".join(overloads)


def _guard(fn: Callable[..., pa.Array], errors: UdfErrors) -> Callable[..., pa.Array]:
    # DuckDB flattens a UDF's exception into its own message; keep ours to re-raise as is.
    # DuckDB counts the Python function's parameters, so each arity gets its own wrapper.
    def call(*args: pa.ChunkedArray) -> pa.Array:
        try:
            with calls.udf_call():
                return fn(*(combine(a) for a in args))
        except InferlineError as exc:
            errors.append(exc)
            raise

    def call1(a: pa.ChunkedArray) -> pa.Array:
        return call(a)

    def call2(a: pa.ChunkedArray, b: pa.ChunkedArray) -> pa.Array:
        return call(a, b)

    def call3(a: pa.ChunkedArray, b: pa.ChunkedArray, c: pa.ChunkedArray) -> pa.Array:
        return call(a, b, c)

    def call4(a: pa.ChunkedArray, b: pa.ChunkedArray, c: pa.ChunkedArray, d: pa.ChunkedArray) -> pa.Array:
        return call(a, b, c, d)

    arity = fn.__code__.co_argcount
    if arity <= 2:
        return call1 if arity == 1 else call2
    return call3 if arity == 3 else call4


def _predict_udf(
    resolver: ModelResolver, public: str, arrow_type: pa.DataType, errors: UdfErrors
) -> Callable[..., pa.Array]:
    return _guard(_predict_run(resolver, public, arrow_type), errors)


def _predict_run(
    resolver: ModelResolver, public: str, arrow_type: pa.DataType
) -> Callable[[pa.Array, pa.Array], pa.Array]:
    def run(names: pa.Array, inputs: pa.Array) -> pa.Array:
        unique = [v for v in pc.unique(names).to_pylist() if v is not None]
        if len(unique) == 1 and not names.null_count:
            return _predict_chunk(resolver.get(unique[0]), inputs, public, arrow_type)
        # Several models in one chunk (a model name from a column): one call per model.
        out = pa.nulls(len(names), arrow_type)
        positions = np.arange(len(names))
        parts, where = [], []
        for name in unique:
            mask = pc.equal(names, name).fill_null(False)
            rows = positions[np.asarray(mask.to_numpy(zero_copy_only=False))]
            parts.append(_predict_chunk(resolver.get(name), inputs.take(pa.array(rows)), public, arrow_type))
            where.append(rows)
        if not parts:
            return out
        values = pa.concat_arrays(parts)
        order = np.full(len(names), -1, dtype=np.int64)
        order[np.concatenate(where)] = np.arange(len(values))
        return values.take(pa.array(order, mask=order < 0))

    return run


def _decoding_run(
    resolver: ModelResolver, public: str, arrow_type: pa.DataType
) -> Callable[[pa.Array, pa.Array, pa.Array, pa.Array], pa.Array]:
    """`predict(m, decode_image(blob, h, w))` in one call: the next slice of images decodes while
    the model runs on the last (sql/fused.py); results and errors are those of the two calls."""
    on_images = _predict_run(resolver, public, arrow_type)

    def run(names: pa.Array, blobs: pa.Array, heights: pa.Array, widths: pa.Array) -> pa.Array:
        unique = [v for v in pc.unique(names).to_pylist() if v is not None]
        if len(unique) != 1 or names.null_count:
            return on_images(names, decode_column(blobs, heights, widths))
        try:
            loaded = resolver.get(unique[0])
        except InferlineError:
            decode_column(blobs, heights, widths)  # a bad image is reported first, as unfused
            raise
        jobs = chunk_jobs(blobs, heights, widths)
        if not fused.fusable(loaded, jobs):
            return on_images(names, decode_column(blobs, heights, widths))
        where = f"{public}({loaded.name!r})"
        decoded: list[np.ndarray | None] = [None] * len(blobs)
        parts = fused.decode_and_predict(loaded, jobs, decoded, run_model, where)
        if parts is None:  # no image, or images of different sizes: as the unfused call
            return on_images(names, images_to_arrow(decoded))
        valid = np.array([image is not None for image in decoded], dtype=bool)
        return scatter(_output(fused.concatenate(parts), public, where), valid).cast(arrow_type)

    return run


def _predict_chunk(loaded: LoadedModel, inputs: pa.Array, public: str, arrow_type: pa.DataType) -> pa.Array:
    valid = complete_rows(inputs)
    where = f"{public}({loaded.name!r})"
    present = inputs if valid.all() else inputs.filter(pa.array(valid))
    if len(present) == 0:
        return pa.nulls(len(inputs), arrow_type)
    tensor = model_layout(list_tensor(present, where=where), loaded)
    prediction = run_model(loaded, tensor, where=where)
    return scatter(_output(prediction, public, where), valid).cast(arrow_type)


def run_model(
    loaded: LoadedModel, tensor: np.ndarray, *, where: str, shape: tuple[int, ...] | None = None
) -> Prediction:
    """One chunk through the model (image tensors in slices, see sql/calls.py); a failure names
    the model and the input shape (`shape`, when `tensor` is a slice of the chunk)."""
    try:
        if loaded.handler.framework == "torch":
            with calls.torch_threads():
                return calls.predict_sliced(loaded, tensor)
        return calls.predict_sliced(loaded, tensor)
    except InferlineError:
        raise
    except Exception as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SqlError(
            f"{where}: model {loaded.model_id} failed on input of shape {shape or tuple(tensor.shape)} "
            f"({type(exc).__name__}: {message}); check the number and order of the input columns"
        ) from exc


def _output(prediction: Prediction, public: str, where: str) -> pa.Array:
    values = prediction.prediction
    if public == "predict_scores":
        scores = prediction.scores if prediction.scores is not None else values
        return _list_rows(np.asarray(scores, dtype=np.float64))
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise SqlError(
            f"{where}: the model returns {values.shape[1:]} values per row; use predict_scores(...)"
        )
    if public == "predict_label":
        return pa.array(values.tolist() if values.dtype == object else values).cast(pa.string())
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_):
        raise SqlError(f"{where}: the model predicts text labels; use predict_label(...) for them")
    return pa.array(values.astype(np.float64, copy=False))


def _list_rows(matrix: np.ndarray) -> pa.Array:
    flat = np.ascontiguousarray(matrix).reshape(len(matrix), -1)
    width = flat.shape[1]
    offsets = pa.array(np.arange(0, (len(flat) + 1) * width, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(flat.reshape(-1)))
