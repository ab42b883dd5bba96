"""`ML.PREDICT(MODEL m, (subquery))` -> a DuckDB subquery calling a model-specific Arrow UDF.

The subquery's columns pass through; the model's outputs come first, named as BigQuery
names them for imported models:

- ONNX: the graph's output names (skl2onnx classifiers: `label`, `probabilities`);
- a model with several outputs that is not a classifier: one column per output, under its
  name (ONNX/SavedModel/TFLite signature names, Keras output layers, torch `output_0`...);
- a `CREATE MODEL ... OUTPUT(a ..., b ...)` clause: those names, in order;
- other frameworks: `predicted_label` (plus `probabilities` when the model returns class
  scores) for classifiers, `predicted_value` for the rest.

Which subquery columns feed the model: the model's declared inputs (`INPUT(...)` clause,
or the store's metadata), else scikit-learn's `feature_names_in_`, else the one array
column (e.g. `ML.DECODE_IMAGE(data) AS image`), else every numeric column, in order.
The output types come from running the model on the subquery's first rows (a LIMIT 8 probe).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from duckdb.func import ARROW, SPECIAL

from inferline.errors import InferlineError, SqlError
from inferline.models.base import LoadedModel, Prediction
from inferline.sql import calls, fused
from inferline.sql.decode import IMAGE_TYPE
from inferline.sql.functions import run_model
from inferline.sql.tensors import (
    combine,
    list_tensor,
    model_layout,
    scalar_matrix,
    scatter,
    to_arrow,
    valid_rows,
)
from inferline.sql.training import outputs as training_outputs

NUMERIC = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "FLOAT",
    "DOUBLE",
    "BOOLEAN",
)
PROBE_ROWS = 8


@dataclass(frozen=True)
class Output:
    """One model output column: its SQL name and Arrow type."""

    name: str
    type: pa.DataType
    source: str | None = None  # the model output it holds, when the model has several


def choose_inputs(columns: list[str], types: list[str], loaded: LoadedModel, where: str) -> list[str]:
    declared = list(loaded.inputs)
    if declared:
        missing = [c for c in declared if c not in columns]
        if missing:
            raise SqlError(
                f"{where}: the subquery has no column(s) {', '.join(missing)} that the model takes "
                f"(columns: {', '.join(columns)})"
            )
        return declared
    names = getattr(loaded.model, "feature_names_in_", None)
    if names is not None and all(str(n) in columns for n in names):
        return [str(n) for n in names]
    arrays = [c for c, t in zip(columns, types, strict=True) if t.endswith("]")]
    if len(arrays) == 1:
        return arrays
    numeric = [c for c, t in zip(columns, types, strict=True) if t in NUMERIC or t.startswith("DECIMAL")]
    if not numeric:
        raise SqlError(
            f"{where}: no input columns; the subquery has {', '.join(columns) or 'none'}: select "
            "numeric feature columns or one array column"
        )
    expected = feature_count(loaded)
    if expected is not None and len(numeric) != expected:
        raise SqlError(
            f"{where}: the model takes {expected} features but the subquery has {len(numeric)} numeric "
            f"columns ({', '.join(numeric)}); select only the feature columns, or name them with "
            f"CREATE MODEL ... INPUT(name FLOAT64, ...)"
        )
    return numeric


def feature_count(loaded: LoadedModel) -> int | None:
    """How many input features the model declares, when it says."""
    count = getattr(loaded.model, "n_features_in_", None)
    if isinstance(count, int):
        return count
    try:
        shape = loaded.model.get_inputs()[0].shape
    except (AttributeError, IndexError):
        return None
    return shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None


def output_names(loaded: LoadedModel, has_scores: bool) -> list[str]:
    declared = loaded.metadata.get("outputs")
    if declared:
        return [str(n) for n in declared]
    if loaded.handler.framework == "onnx":
        try:
            return [o.name for o in loaded.model.get_outputs()]
        except AttributeError:
            pass
    if has_scores:
        return ["predicted_label", "probabilities"]
    return ["predicted_label"] if hasattr(loaded.model, "classes_") else ["predicted_value"]


def outputs_of(loaded: LoadedModel, prediction: Prediction | None) -> list[Output]:
    shaped = training_outputs.shaped_outputs(loaded.model)
    if shaped is not None:  # a trained kmeans/pca: BigQuery's own columns
        return [Output(name, t) for name, t in shaped]
    if prediction is not None and prediction.outputs is not None:
        if prediction.scores is not None and "scores" in prediction.outputs:
            return classifier_outputs(loaded, prediction.outputs)
        return named_outputs(loaded, prediction.outputs)
    if prediction is None:
        has_scores = hasattr(loaded.model, "predict_proba") or _onnx_outputs(loaded) > 1
        types: list[pa.DataType] = [pa.float64(), pa.list_(pa.float64())]
    else:
        has_scores = prediction.scores is not None
        types = [to_arrow(prediction.prediction).type, pa.list_(pa.float64())]
    names = output_names(loaded, has_scores)
    count = 2 if has_scores else 1
    if len(names) < count:
        names = names + [f"output_{i}" for i in range(len(names), count)]
    classes = getattr(loaded.model, "classes_", None)
    if has_scores and names[1].endswith("_probs") and classes is not None:
        # BigQuery's trained classifiers: predicted_<label>_probs, a list of {label, prob}.
        types[1] = label_probs_type(classes)
    return [Output(name, t) for name, t in zip(names[:count], types[:count], strict=True)]


def named_outputs(loaded: LoadedModel, values: dict[str, np.ndarray]) -> list[Output]:
    """A multi-output model's columns: one per output, under its own name, or under the
    `OUTPUT(...)` clause's names (by name when they all are the model's, else in order)."""
    model_names = list(values)
    declared = [str(n) for n in loaded.metadata.get("outputs") or []]
    if not declared:
        chosen = list(zip(model_names, model_names, strict=True))
    elif all(n in values for n in declared):
        chosen = [(n, n) for n in declared]
    elif len(declared) == len(model_names):
        chosen = list(zip(declared, model_names, strict=True))
    else:
        raise SqlError(
            f"model {loaded.model_id}: OUTPUT({', '.join(declared)}) names {len(declared)} columns but "
            f"the model gives {len(model_names)} outputs ({', '.join(model_names)}); name each of them"
        )
    return [Output(name, to_arrow(np.asarray(values[source])).type, source) for name, source in chosen]


def classifier_outputs(loaded: LoadedModel, values: dict[str, np.ndarray]) -> list[Output]:
    """A classifier's columns (predicted_label, probabilities) then a column per other output
    of its model; `OUTPUT(...)` names them in that order, or picks outputs by their names."""
    keys = list(values)  # prediction, scores, then the model's other outputs
    declared = [str(n) for n in loaded.metadata.get("outputs") or []]
    if declared and all(n in values for n in declared):
        chosen = [(n, n) for n in declared]
    elif len(declared) <= len(keys):
        names = declared or ["predicted_label", "probabilities", *keys[2:]]
        chosen = list(zip(names, keys, strict=False))
    else:
        raise SqlError(
            f"model {loaded.model_id}: OUTPUT({', '.join(declared)}) names {len(declared)} columns but "
            f"the model gives {len(keys)} (a label, probabilities, {', '.join(keys[2:])}); name each of them"
        )
    return [Output(name, to_arrow(np.asarray(values[source])).type, source) for name, source in chosen]


def label_probs_type(classes: Any) -> pa.DataType:
    label = to_arrow(np.asarray(classes)).type
    return pa.list_(pa.struct([pa.field("label", label), pa.field("prob", pa.float64())]))


def label_probs(scores: np.ndarray, classes: Any, t: pa.DataType) -> pa.Array:
    """(n, k) probabilities -> n lists of k {label, prob}, in the classes' order."""
    flat = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    labels = pa.array(np.tile(np.asarray(classes), len(flat)), type=t.value_type.field("label").type)
    pairs = pa.StructArray.from_arrays([labels, pa.array(flat.reshape(-1))], fields=list(t.value_type))
    offsets = pa.array(np.arange(0, (len(flat) + 1) * flat.shape[1], flat.shape[1], dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pairs)


def _onnx_outputs(loaded: LoadedModel) -> int:
    try:
        return len(loaded.model.get_outputs())
    except AttributeError:
        return 0


def features(fields: list[pa.Array], names: list[str], loaded: LoadedModel, where: str) -> np.ndarray:
    if len(fields) == 1 and pa.types.is_list(fields[0].type):
        return model_layout(list_tensor(fields[0], where=where), loaded)
    return model_layout(scalar_matrix(fields, names, where=where, text=loaded.text_inputs), loaded)


def usable_rows(fields: list[pa.Array], packed: pa.Array, imputes: bool) -> np.ndarray:
    """The rows to predict: every present row for a model that imputes NULL features, else the
    rows whose every input is present (the others get a NULL prediction)."""
    if not imputes:
        return valid_rows(fields)
    return valid_rows([packed]) if packed.null_count else np.ones(len(packed), dtype=bool)


def apply_threshold(prediction: Prediction, loaded: LoadedModel, threshold: float, where: str) -> Prediction:
    """A binary classifier's labels at `threshold` on its second class's probability."""
    scores = None if prediction.scores is None else np.asarray(prediction.scores)
    if scores is None or scores.ndim != 2 or scores.shape[1] != 2:
        raise SqlError(
            f"{where}: threshold applies to binary classifiers with probabilities; "
            f"model {loaded.model_id} does not give two class probabilities"
        )
    classes = getattr(loaded.model, "classes_", None)
    labels = np.asarray(classes) if classes is not None and len(classes) == 2 else np.array([0, 1])
    return Prediction(prediction=labels[(scores[:, 1] >= threshold).astype(np.int64)], scores=scores)


def predict_struct(
    loaded: LoadedModel,
    inputs: list[str],
    outputs: list[Output],
    where: str,
    *,
    threshold: float | None = None,
) -> Callable[[pa.Array], pa.Array]:
    """The UDF body: a struct of input columns -> a struct of output columns."""
    struct_type = pa.struct([pa.field(o.name, o.type) for o in outputs])
    arrays_of = output_arrays(loaded, outputs, where, threshold)
    shaped = training_outputs.shaped_outputs(loaded.model) is not None

    imputes = loaded.allow_missing  # a trained model imputes NULL features (BigQuery ML)

    def run(packed: pa.Array) -> pa.Array:
        fields = [packed.field(i) for i in range(len(inputs))]
        valid = usable_rows(fields, packed, imputes)
        present = [f.filter(pa.array(valid)) for f in fields] if not valid.all() else fields
        if not present or len(present[0]) == 0:
            return pa.nulls(len(packed), struct_type)
        matrix = features(present, inputs, loaded, where)
        if shaped:
            arrays = training_outputs.shaped_arrays(loaded.model, matrix)
            return pa.StructArray.from_arrays([scatter(a, valid) for a in arrays], fields=list(struct_type))
        prediction = run_model(loaded, matrix, where=where)
        return pa.StructArray.from_arrays(arrays_of(prediction, valid), fields=list(struct_type))

    return run


def output_arrays(
    loaded: LoadedModel, outputs: list[Output], where: str, threshold: float | None = None
) -> Callable[[Prediction, np.ndarray], list[pa.Array]]:
    """A chunk's prediction on its valid rows -> one array per output, NULL on the other rows
    (labels at `threshold` when given)."""

    def arrays(prediction: Prediction, valid: np.ndarray) -> list[pa.Array]:
        if threshold is not None:
            prediction = apply_threshold(prediction, loaded, threshold, where)
        values: list[np.ndarray | None] = [prediction.prediction, prediction.scores]
        if outputs and outputs[0].source is not None:
            named = prediction.outputs or {}
            values = [named.get(o.source or "") for o in outputs]
        result = []
        for output, value in zip(outputs, values, strict=False):
            if value is None:
                raise SqlError(f"{where}: the model returned no {output.name!r} output for this chunk")
            if pa.types.is_list(output.type) and pa.types.is_struct(output.type.value_type):
                converted = label_probs(value, getattr(loaded.model, "classes_", []), output.type)
            else:
                converted = _as_type(value, output.type, where)
            result.append(scatter(converted, valid))
        return result

    return arrays


def _as_type(value: np.ndarray, t: pa.DataType, where: str) -> pa.Array:
    if pa.types.is_list(t):
        flat = np.asarray(value, dtype=np.float64).reshape(len(value), -1)
        width = flat.shape[1]
        offsets = pa.array(np.arange(0, (len(flat) + 1) * width, width, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array(flat.reshape(-1)))
    try:
        return to_arrow(value).cast(t)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise SqlError(f"{where}: the model's output changed type between chunks ({exc})") from None


def sql_type(t: pa.DataType) -> str:
    """The DuckDB spelling of an Arrow output type."""
    if pa.types.is_list(t):
        return sql_type(t.value_type) + "[]"
    if pa.types.is_struct(t):
        return "STRUCT(" + ", ".join(f"{identifier(f.name)} {sql_type(f.type)}" for f in t) + ")"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "VARCHAR"
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_integer(t):
        return {8: "TINYINT", 16: "SMALLINT", 32: "INTEGER", 64: "BIGINT"}[t.bit_width]
    if pa.types.is_float32(t):
        return "FLOAT"
    if pa.types.is_floating(t):
        return "DOUBLE"
    raise SqlError(f"model output of type {t} has no SQL type; expected numbers, text or arrays of numbers")


def identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def predict_subquery(
    con: duckdb.DuckDBPyConnection,
    loaded: LoadedModel,
    model_name: str,
    inner_sql: str,
    ctes_sql: str,
    errors: list[InferlineError],
    *,
    batched_sql: str | None = None,
    exclude: tuple[str, ...] = (),
    threshold: float | None = None,
    decoded: dict[str, fused.DecodedInput] | None = None,
) -> tuple[str, list[str]]:
    """Register the UDF for one ML.PREDICT; the DuckDB subquery replacing it, and the names of
    the model's output columns in it.

    The first rows of `inner_sql` are probed for the output types; the returned subquery reads
    `batched_sql` when given (the same rows, with object tables read in full chunks), or, when
    the model's one input is a `decoded` column, that one's subquery (decoding in the UDF, see
    sql/fused.py). Columns in `exclude` (ML.EVALUATE's label) pass through but are never model
    inputs.
    """
    where = f"ML.PREDICT(MODEL {model_name})"
    probe_sql = f"{ctes_sql} SELECT * FROM ({inner_sql}) AS __inferline_in LIMIT {PROBE_ROWS}"
    try:
        probe = con.sql(probe_sql)
        columns = list(probe.columns)
        types = [str(t) for t in probe.types]
        sample = probe.to_arrow_table()
    except duckdb.Error as exc:
        raise SqlError(f"{where}: the input subquery fails: {str(exc).splitlines()[0]}") from None
    candidates = [(c, t) for c, t in zip(columns, types, strict=True) if c not in exclude]
    inputs = choose_inputs([c for c, _ in candidates], [t for _, t in candidates], loaded, where)
    prediction = _probe_prediction(sample, inputs, loaded, where)
    if threshold is not None and prediction is not None:
        prediction = apply_threshold(prediction, loaded, threshold, where)
    outputs = outputs_of(loaded, prediction)
    clash = [o.name for o in outputs if o.name in columns]
    if clash:
        raise SqlError(f"{where}: the subquery already has column(s) {', '.join(clash)}; rename them")
    input_types = dict(zip(columns, types, strict=True))
    param = "STRUCT(" + ", ".join(f"{identifier(c)} {input_types[c]}" for c in inputs) + ")"
    result = "STRUCT(" + ", ".join(f"{identifier(o.name)} {sql_type(o.type)}" for o in outputs) + ")"
    key = "|".join([loaded.model_id, loaded.uri, param, result, str(id(loaded)), str(threshold)])
    body = predict_struct(loaded, inputs, outputs, where, threshold=threshold)
    image = (decoded or {}).get(inputs[0]) if len(inputs) == 1 else None
    if image is not None and not _fusable(con, image, columns, input_types, ctes_sql):
        image = None
    if image is not None:
        # The model's input is the subquery's decode_image(...): decode within the UDF (sql/fused.py).
        image_field = pa.field(image.column, pa.list_(pa.list_(pa.list_(pa.float32()))))
        struct_type = pa.struct([*(pa.field(o.name, o.type) for o in outputs), image_field])
        arrays = output_arrays(loaded, outputs, where, threshold)
        body = fused.predict_decoding(loaded, body, arrays, struct_type, run_model, where)
        param = fused.PARAM
        result = result[:-1] + f", {identifier(image.column)} {IMAGE_TYPE})"
        key = f"{key}|{param}|{result}"
    udf = "__inferline_ml_predict_" + hashlib.sha1(key.encode()).hexdigest()[:12]

    def call(packed: pa.ChunkedArray) -> pa.Array:
        try:
            with calls.udf_call():
                return body(combine(packed))
        except InferlineError as exc:
            errors.append(exc)
            raise

    try:
        con.create_function(udf, call, [param], result, type=ARROW, null_handling=SPECIAL)
    except duckdb.NotImplementedException:
        pass  # already registered by an earlier statement: same model, inputs and outputs
    if image is not None:
        out = [f"__inferline_out.{identifier(o.name)} AS {identifier(o.name)}" for o in outputs]
        passed = [
            f"__inferline_out.{identifier(c)} AS {identifier(c)}" if c == image.column else identifier(c)
            for c in columns
        ]
        subquery = (
            f"(SELECT {', '.join([*out, *passed])} FROM "
            f"(SELECT *, {udf}({fused.PACKED}) AS __inferline_out FROM ({image.sql}) AS __inferline_in))"
        )
        return subquery, [o.name for o in outputs]
    packed = "{" + ", ".join(f"'{c.replace(chr(39), chr(39) * 2)}': {identifier(c)}" for c in inputs) + "}"
    subquery = (
        f"(SELECT __inferline_out.*, * EXCLUDE (__inferline_out) FROM "
        f"(SELECT *, {udf}({packed}) AS __inferline_out FROM ({batched_sql or inner_sql}) AS __inferline_in))"
    )
    return subquery, [o.name for o in outputs]


def _fusable(
    con: duckdb.DuckDBPyConnection,
    image: fused.DecodedInput,
    columns: list[str],
    types: dict[str, str],
    ctes_sql: str,
) -> bool:
    """Whether the decoding subquery binds to the same columns, the decoded one replaced."""
    if len(set(columns)) != len(columns) or types[image.column] != IMAGE_TYPE:
        return False
    try:
        bound = list(con.sql(f"{ctes_sql} SELECT * FROM ({image.sql}) AS __inferline_in LIMIT 0").columns)
    except duckdb.Error:
        return False
    return bound == image.columns(columns)


def _probe_prediction(
    sample: pa.Table, inputs: list[str], loaded: LoadedModel, where: str
) -> Prediction | None:
    fields = [combine(sample.column(c)) for c in inputs]
    valid = valid_rows(fields) if not loaded.allow_missing else np.ones(sample.num_rows, dtype=bool)
    if not valid.any():
        return None
    present = [f.filter(pa.array(valid)) for f in fields]
    tensor: Any = features(present, inputs, loaded, where)
    return run_model(loaded, tensor, where=where)
