"""One batch through one or several models: features or hooks -> predict -> result columns.

With one model, rows it cannot predict are dead-lettered and left out of the results. With
several (`models:`), every source row gives one result row holding each model's columns,
prefixed by the model's name; a model that fails on a row dead-letters that row for that
model only (its columns are null there) and the other models' answers are kept.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from inferline.engine.features import (
    assemble,
    extract_features,
    passthrough_columns,
    result_columns,
)
from inferline.errors import InferlineError, ModelError, RemoteUnavailable
from inferline.io.base import DeadLetter, row_as_json
from inferline.models.base import LoadedModel, Prediction
from inferline.models.hooks import HookError, ModelHooks

log = logging.getLogger("inferline.engine")


@dataclass
class RunColumns:
    """What one run remembers across batches with several models: each model's result column
    types (fixed by the first batch), and which dropped columns it has warned about."""

    types: dict[str, dict[str, pa.DataType]] = field(default_factory=dict)
    warned: set[tuple[str, str]] = field(default_factory=set)


@dataclass
class ModelOutput:
    """One model's answers for the rows listed in `rows` (indices into the batch)."""

    model: LoadedModel
    rows: np.ndarray
    prediction: Prediction | None
    extra: dict[str, pa.Array] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    typed: pa.RecordBatch | None = None


def run_model(
    model: LoadedModel, hooks: ModelHooks | None, data: pa.RecordBatch, keys: pa.Array
) -> ModelOutput:
    """Predict `data` with `model`; never raises for bad rows or failing hooks."""
    dead: list[DeadLetter] = []
    all_rows = np.arange(data.num_rows)

    def bury(rows: np.ndarray, error: str, stage: str) -> None:
        for row in rows.tolist():
            dead.append(DeadLetter(str(keys[row]), row_as_json(data, row), error, stage, model.model_id))

    try:
        if hooks is not None:
            hooks.setup(model)
        inputs = hooks.preprocess(data) if hooks is not None else None
    except HookError as exc:
        bury(all_rows, str(exc), "hook")
        return ModelOutput(model, all_rows[:0], None, dead=dead)
    typed = None
    if inputs is None:
        features = extract_features(
            data,
            model.inputs,
            where=f"model {model.name} inputs",
            text=model.text_inputs,
            missing=model.allow_missing,
        )
        rows = np.flatnonzero(features.good)
        for row, error in features.errors.items():
            bury(np.array([row]), error, "features")
        matrix = features.matrix
        typed = _typed_inputs(data, model.inputs, matrix, rows)
    else:
        if len(inputs) != data.num_rows:
            bury(
                all_rows,
                f"model {model.name}: preprocess returned {len(inputs)} rows for {data.num_rows}",
                "hook",
            )
            return ModelOutput(model, all_rows[:0], None, dead=dead)
        rows, matrix = all_rows, inputs
    try:
        prediction, failed = predict_isolating(model, matrix)
    except RemoteUnavailable as exc:
        # The server is down or refusing: every row would fail the same way, so do not bisect.
        bury(rows, f"model {model.model_id}: {exc}", "predict")
        return ModelOutput(model, all_rows[:0], None, dead=dead)
    if failed:
        bad = np.array(sorted(failed))
        for index in bad.tolist():
            bury(rows[[index]], failed[index], "predict")
        rows = np.delete(rows, bad)
    extra: dict[str, pa.Array] = {}
    if hooks is not None and hooks.active and len(rows):
        try:
            extra = hooks.postprocess(_take(data, rows), prediction)
        except HookError as exc:
            bury(rows, str(exc), "hook")
            return ModelOutput(model, all_rows[:0], None, dead=dead)
    return ModelOutput(model, rows, prediction, extra, dead, typed)


def results_for(
    models: list[LoadedModel],
    hooks: list[ModelHooks | None],
    data: pa.RecordBatch,
    keys: pa.Array,
    *,
    keep: list[str] | None,
    pool: ThreadPoolExecutor | None = None,
    columns: RunColumns | None = None,
) -> tuple[pa.RecordBatch | None, list[DeadLetter]]:
    """Result rows and dead letters for a batch, for one model or several side by side.

    `columns` remembers each model's result columns across batches (pass the same one every
    time), so a batch where a model failed on every row still writes its columns, all null,
    with the types of earlier batches: the sink sees one schema for the whole run.
    """
    if len(models) == 1 or pool is None:
        outputs = [run_model(m, h, data, keys) for m, h in zip(models, hooks, strict=True)]
    else:
        outputs = list(
            pool.map(lambda mh: run_model(mh[0], mh[1], data, keys), zip(models, hooks, strict=True))
        )
    dead = [d for out in outputs for d in out.dead]
    if len(models) == 1:
        out = outputs[0]
        if out.prediction is None or not len(out.rows):
            return None, dead
        source = out.typed if out.typed is not None else _take(data, out.rows)
        batch = assemble(source, _take_array(keys, out.rows), out.prediction, out.model.model_id, keep=keep)
        return _with_extra(batch, out.extra), dead
    known = RunColumns() if columns is None else columns
    return _side_by_side(outputs, hooks, data, keys, keep=keep, known=known), dead


def _side_by_side(
    outputs: list[ModelOutput],
    hooks: list[ModelHooks | None],
    data: pa.RecordBatch,
    keys: pa.Array,
    *,
    keep: list[str] | None,
    known: RunColumns,
) -> pa.RecordBatch | None:
    n = data.num_rows
    if n == 0:
        return None
    names, arrays = passthrough_columns(data, keys, keep=keep)
    for out, model_hooks in zip(outputs, hooks, strict=True):
        prefix = f"{out.model.name}_"
        # Scatter this model's compact answers back to all rows (null where it failed).
        index = np.full(n, -1, dtype=np.int64)
        index[out.rows] = np.arange(len(out.rows))
        take = pa.array(index, mask=index < 0)
        columns: dict[str, pa.Array] = {}
        if out.prediction is not None and len(out.rows):
            columns.update(result_columns(out.prediction))
            columns.update(out.extra)
            columns["model_id"] = pa.repeat(pa.scalar(out.model.model_id), len(out.rows))
        types = known.types.get(out.model.name)
        if types is None:
            # The first batch fixes the sink's schema: a model that failed on all of its rows
            # is probed with one row of zeros for its column types.
            types = (
                {n: c.type for n, c in columns.items()} if columns else probe_types(out.model, model_hooks)
            )
            known.types[out.model.name] = types
        columns = _conform(columns, types, out.model.name, len(out.rows), known.warned)
        for name, column in columns.items():
            names.append(prefix + name)
            arrays.append(column.take(take) if len(column) else pa.nulls(n, column.type))
    return pa.RecordBatch.from_arrays(arrays, names=names)


def probe_types(model: LoadedModel, hooks: ModelHooks | None) -> dict[str, pa.DataType]:
    """A model's result column types, from predicting one row of zeros (when its inputs are
    scalar columns and it answers); label columns come from the label map's settings.
    Unknown columns fall back to a float `prediction`."""
    types: dict[str, pa.DataType] = {"prediction": pa.float64()}
    if model.inputs:
        try:
            probe = model.predict(np.zeros((1, len(model.inputs))))
            if probe.outputs is not None:
                del types["prediction"]
            types.update({name: column.type for name, column in result_columns(probe).items()})
        except Exception as exc:  # noqa: BLE001 - a probe that fails leaves the defaults
            log.debug("model %s: type probe failed: %s", model.model_id, exc)
    if hooks is not None:
        types.update(hooks.label_types())
    types["model_id"] = pa.string()
    return types


def _conform(
    columns: dict[str, pa.Array],
    types: dict[str, pa.DataType],
    model: str,
    n: int,
    warned: set[tuple[str, str]],
) -> dict[str, pa.Array]:
    # Every batch writes the columns and types of the first one, so the sink's schema holds.
    out: dict[str, pa.Array] = {}
    for name, type_ in types.items():
        column = columns.get(name)
        if column is None:
            out[name] = pa.nulls(n, type_)
        elif column.type == type_:
            out[name] = column
        else:
            try:
                out[name] = column.cast(type_)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                why = f"left empty: its values are {column.type}, not {type_} as before"
                _warn_once(warned, model, name, why)
                out[name] = pa.nulls(n, type_)
    for name in columns.keys() - types.keys():
        _warn_once(
            warned, model, name, "not written: it first appeared after the first batch fixed the columns"
        )
    return out


def _warn_once(warned: set[tuple[str, str]], model: str, column: str, why: str) -> None:
    if (model, column) not in warned:
        warned.add((model, column))
        log.warning("model %s: column %s_%s %s", model, model, column, why)


def _with_extra(batch: pa.RecordBatch, extra: dict[str, pa.Array]) -> pa.RecordBatch:
    for name, column in extra.items():
        index = batch.schema.get_field_index(name)
        if index >= 0:
            batch = batch.set_column(index, name, column)
        else:
            # Extra columns go before model_id, which stays last.
            batch = batch.add_column(batch.num_columns - 1, name, column)
    return batch


def _take(data: pa.RecordBatch, rows: np.ndarray) -> pa.RecordBatch:
    if len(rows) == data.num_rows:
        return data
    return data.take(pa.array(rows, type=pa.int64()))


def _take_array(values: pa.Array, rows: np.ndarray) -> pa.Array:
    if len(rows) == len(values):
        return values
    return values.take(pa.array(rows, type=pa.int64()))


def _typed_inputs(
    data: pa.RecordBatch, inputs: list[str], matrix: np.ndarray, rows: np.ndarray
) -> pa.RecordBatch:
    # CSV inputs are read as text so one bad value dead-letters a row instead of failing
    # the file; once parsed, pass the numbers through rather than the text.
    data = _take(data, rows)
    if matrix.ndim != 2 or matrix.shape[1] != len(inputs):
        return data
    for j, name in enumerate(inputs):
        index = data.schema.get_field_index(name)
        if index >= 0 and pa.types.is_string(data.schema.field(index).type):
            data = data.set_column(index, name, pa.array(matrix[:, j]))
    return data


def predict_isolating(model: LoadedModel, matrix: np.ndarray) -> tuple[Prediction, dict[int, str]]:
    """Predict a batch; if the model raises, bisect to find the rows it fails on."""
    try:
        return _check(model, model.predict(matrix), len(matrix)), {}
    except InferlineError:
        raise
    except Exception as exc:
        if len(matrix) <= 1:
            error = f"model {model.model_id} failed: {type(exc).__name__}: {exc}".splitlines()[0]
            return _empty(), {0: error} if len(matrix) else {}
    half = len(matrix) // 2
    left, left_failed = predict_isolating(model, matrix[:half])
    right, right_failed = predict_isolating(model, matrix[half:])
    failed = dict(left_failed)
    failed.update({half + i: e for i, e in right_failed.items()})
    parts = [p for p in (left, right) if len(p.prediction)]
    if not parts:
        return _empty(), failed
    return Prediction.concat(parts), failed


def _check(model: LoadedModel, prediction: Prediction, n: int) -> Prediction:
    if len(prediction.prediction) != n:
        raise ModelError(
            f"model {model.model_id}: returned {len(prediction.prediction)} predictions for {n} rows"
        )
    return prediction


def _empty() -> Prediction:
    return Prediction(prediction=np.empty((0,)), scores=None)
