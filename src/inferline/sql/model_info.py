"""A trained model's facts in SQL: ML.TRAINING_INFO, ML.FEATURE_INFO, ML.WEIGHTS, ML.CENTROIDS and
ML.GLOBAL_EXPLAIN (tables of the model alone), ML.EXPLAIN_PREDICT and ML.DETECT_ANOMALIES (per
input row), with BigQuery's output columns (computed in sql/training/info.py and explain.py).

sqlglot parses none of them. A model-only call is computed when the statement is translated
and replaced by the name of an Arrow table registered on the connection. The per-row ones
become ML.PREDICT calls marked like ML.EVALUATE (sql/evaluate.py), so their input subquery is
translated as ML.PREDICT's is, and `per_row` computes the rows.

Example:
    >>> model_name("MODEL `project.bqml_tutorial.m`")
    'bqml_tutorial.m'
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import sqlglot
from sqlglot import exp

from inferline.errors import SqlError
from inferline.sql import recommend
from inferline.sql.ddl import Session
from inferline.sql.names import ml_calls
from inferline.sql.training import data, explain, info

# function -> the STRUCT(...) options it takes
MODEL_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "TRAINING_INFO": (),
    "FEATURE_INFO": (),
    "WEIGHTS": ("standardize",),
    "CENTROIDS": ("standardize",),
    "GLOBAL_EXPLAIN": (),
}
INPUT_FUNCTIONS: dict[str, tuple[str, ...]] = {
    "EXPLAIN_PREDICT": ("top_k_features",),
    "DETECT_ANOMALIES": ("contamination",),
}
FUNCTIONS = (*MODEL_FUNCTIONS, *INPUT_FUNCTIONS, "RECOMMEND")
TOP_K_FEATURES = 5  # BigQuery's default


def model_name(text: str) -> str:
    name = text.strip()
    if name.upper().startswith("MODEL"):
        name = name[5:]
    return ".".join(name.strip().replace("`", "").split(".")[-2:])


def options(node: exp.Expr | None, allowed: tuple[str, ...], where: str) -> dict[str, Any]:
    """A STRUCT(value AS name, ...) of literals, checked against `allowed`."""
    if node is None:
        return {}
    items = node.expressions if isinstance(node, exp.Struct) else [node]
    result: dict[str, Any] = {}
    for item in items:
        if isinstance(item, exp.PropertyEQ):
            name, value = item.this.name.lower(), item.expression
        elif isinstance(item, exp.Alias):
            name, value = item.alias.lower(), item.this
        else:
            name, value = "", item
        if name not in allowed:
            raise SqlError(
                f"{where}: option {name or item.sql('bigquery')} is not supported"
                + (f" (supported: {', '.join(allowed)})" if allowed else " (it takes none)")
            )
        if isinstance(value, exp.Boolean):
            result[name] = bool(value.this)
        elif isinstance(value, exp.Literal) and not value.is_string:
            result[name] = float(value.this)
        else:
            raise SqlError(
                f"{where}: option {name} must be a number or TRUE/FALSE, got {value.sql('bigquery')}"
            )
    return result


def rewrite(text: str, session: Session, columns_of: Callable[[str], list[str]] | None = None) -> str:
    """Compute each model-only call and put a registered table's name in its place; move
    ML.DETECT_ANOMALIES's STRUCT after its input, where ML.EVALUATE's options go; replace
    ML.RECOMMEND by its subquery (sql/recommend.py; `columns_of` names a query's columns)."""
    tokens = list(sqlglot.tokenize(text, read="bigquery"))
    edits: list[tuple[int, int, str]] = []
    for function, start, close, commas in ml_calls(tokens, FUNCTIONS):
        inside = tokens[start + 3].end + 1
        if function == "DETECT_ANOMALIES":
            if len(commas) == 2 and tokens[commas[0] + 1].text.upper() == "STRUCT":
                middle = text[tokens[commas[0] + 1].start : tokens[commas[1]].start]
                rest = text[tokens[commas[1] + 1].start : tokens[close].start]
                edits.append((tokens[commas[0]].start, tokens[close].start, f", {rest}, {middle}"))
            continue
        if function in INPUT_FUNCTIONS:
            continue
        ends = [*(tokens[c].start for c in commas), tokens[close].start]
        name = model_name(text[inside : ends[0]])
        where = f"ML.{function}(MODEL {name})"
        if function == "RECOMMEND":
            if len(commas) > 1:
                raise SqlError(f"{where}: takes MODEL name and optionally TABLE t or (SELECT ...)")
            source = text[tokens[commas[0]].end + 1 : ends[1]] if commas else None
            model = session.resolver.get(name).model
            subquery = recommend.replacement(session.con, model, source, columns_of or (lambda q: []), where)
            edits.append((tokens[start].start, tokens[close].end + 1, subquery))
            continue
        given = None
        if len(commas) == 1:
            given = sqlglot.parse_one(text[tokens[commas[0]].end + 1 : ends[1]], read="bigquery")
        elif len(commas) > 1:
            raise SqlError(f"{where}: takes MODEL name and optionally STRUCT(...) options")
        table = model_table(session, function, name, options(given, MODEL_FUNCTIONS[function], where), where)
        registered = f"__inferline_info_{uuid.uuid4().hex[:12]}"
        session.con.register(registered, table)
        edits.append((tokens[start].start, tokens[close].end + 1, registered))
    for begin, end, replacement in sorted(edits, reverse=True):
        text = text[:begin] + replacement + text[end:]
    return text


def model_table(session: Session, function: str, name: str, given: dict[str, Any], where: str) -> pa.Table:
    loaded = session.resolver.get(name)
    _refuse_factorization(loaded, function, where)
    if function == "TRAINING_INFO":
        return info.training_info(loaded, where)
    if function == "FEATURE_INFO":
        return info.feature_info(loaded, where)
    if function == "WEIGHTS":
        return info.weights(loaded, where, standardize=bool(given.get("standardize", False)))
    if function == "CENTROIDS":
        return info.centroids(loaded, where, standardize=bool(given.get("standardize", False)))
    info.training_info(loaded, where)  # refuses models not trained here
    return explain.global_explain(loaded.model, where)


def per_row(
    session: Session,
    loaded: Any,
    function: str,
    query: str,
    outputs: list[str],
    given: dict[str, Any],
    where: str,
) -> str:
    """ML.EXPLAIN_PREDICT / ML.DETECT_ANOMALIES over the rows of `query`: the name of the
    registered result table."""
    info.training_info(loaded, where)  # refuses models not trained here
    _refuse_factorization(loaded, function, where)
    try:
        table = session.con.sql(query).to_arrow_table()
    except Exception as exc:  # duckdb.Error: the input subquery
        raise SqlError(f"{where}: the input subquery fails: {str(exc).splitlines()[0]}") from None
    features = list(loaded.inputs)
    missing = [f for f in features if f not in table.column_names]
    if missing:
        raise SqlError(f"{where}: the input has no column(s) {', '.join(missing)} that the model takes")
    model = loaded.model
    matrix = data.feature_matrix(table, features, list(getattr(model, "text_inputs_", [])))
    if function == "DETECT_ANOMALIES":
        if "contamination" not in given or not 0 <= given["contamination"] <= 0.5:
            raise SqlError(f"{where}: needs STRUCT(0.02 AS contamination), a number between 0 and 0.5")
        flags, distances = explain.anomalies(model, matrix, float(given["contamination"]), where)
        columns = {"is_anomaly": pa.array(flags), "normalized_distance": pa.array(distances, pa.float64())}
    else:
        top_k = int(given.get("top_k_features", TOP_K_FEATURES))
        try:
            parts, baseline, value = explain.attributions(model, features, matrix)
        except SqlError as exc:
            raise SqlError(f"{where}: {exc}") from None
        columns = _predictions(model, matrix, outputs)
        columns["top_feature_attributions"] = explain.top_attributions(features, parts, top_k)
        columns["baseline_prediction_value"] = pa.array(baseline, pa.float64())
        columns["prediction_value"] = pa.array(value, pa.float64())
        columns["approximation_error"] = pa.array(np.abs(baseline + parts.sum(axis=1) - value), pa.float64())
    clash = [c for c in columns if c in table.column_names]
    if clash:
        raise SqlError(f"{where}: the input already has column(s) {', '.join(clash)}; rename them")
    result = pa.table({**columns, **{c: table.column(c) for c in table.column_names}})
    registered = f"__inferline_info_{uuid.uuid4().hex[:12]}"
    session.con.register(registered, result)
    return registered


def _refuse_factorization(loaded: Any, function: str, where: str) -> None:
    """A matrix_factorization model has ML.TRAINING_INFO, ML.FEATURE_INFO, ML.WEIGHTS (and
    ML.RECOMMEND, ML.EVALUATE) only here."""
    kind = getattr(loaded.model, "model_type_", None)
    if kind == "matrix_factorization" and function not in ("TRAINING_INFO", "FEATURE_INFO", "WEIGHTS"):
        raise SqlError(
            f"{where}: ML.{function} does not take matrix_factorization models here (they have "
            "ML.RECOMMEND, ML.EVALUATE, ML.WEIGHTS, ML.TRAINING_INFO and ML.FEATURE_INFO)"
        )


def unsupervised(loaded: Any) -> bool:
    return getattr(loaded.model, "model_type_", None) in ("kmeans", "pca")


def evaluate_unsupervised(session: Session, loaded: Any, query: str, where: str) -> str:
    """ML.EVALUATE of kmeans (davies_bouldin_index, mean_squared_distance: squared distance to
    the nearest centroid) or pca (total_explained_variance_ratio) on the input's rows."""
    model = loaded.model
    if model.model_type_ == "pca":
        ratio = float(np.sum(model[-1].pca_.explained_variance_ratio_))
        result = pa.table({"total_explained_variance_ratio": [ratio]})
    else:
        from sklearn.metrics import davies_bouldin_score

        table = session.con.sql(query).to_arrow_table()
        missing = [f for f in loaded.inputs if f not in table.column_names]
        if missing:
            raise SqlError(f"{where}: the input has no column(s) {', '.join(missing)} that the model takes")
        matrix = data.feature_matrix(table, list(loaded.inputs), list(getattr(model, "text_inputs_", [])))
        processed = model[:-1].transform(matrix)
        distances = model[-1].transform(processed)
        nearest = np.argmin(distances, axis=1)
        index = davies_bouldin_score(processed, nearest) if len(set(nearest.tolist())) > 1 else None
        squared = float(np.mean(np.min(distances, axis=1) ** 2))
        result = pa.table(
            {"davies_bouldin_index": pa.array([index], pa.float64()), "mean_squared_distance": [squared]}
        )
    registered = f"__inferline_info_{uuid.uuid4().hex[:12]}"
    session.con.register(registered, result)
    return registered


def _predictions(model: Any, matrix: np.ndarray, outputs: list[str]) -> dict[str, pa.Array]:
    predicted = np.asarray(model.predict(matrix))
    columns = {outputs[0]: pa.array(predicted.tolist())}
    if len(outputs) > 1 and hasattr(model, "predict_proba"):
        from inferline.sql.mlpredict import label_probs, label_probs_type

        probabilities = np.asarray(model.predict_proba(matrix), dtype=np.float64)
        columns[outputs[1]] = label_probs(probabilities, model.classes_, label_probs_type(model.classes_))
    return columns
