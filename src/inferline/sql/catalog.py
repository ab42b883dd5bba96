"""The model catalog: a table in the database that `CREATE MODEL` writes and `predict()` reads.

A row names a model (`ds.m`), its framework and a path or glob of model files; the newest
match is the current version, as everywhere in inferline. The table is created on the first
`CREATE MODEL`, so connecting to a database never changes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import duckdb

from inferline.errors import SqlError

CATALOG_TABLE = "inferline_models"

# BigQuery's model_type for imported models -> inferline framework.
MODEL_TYPES: dict[str, str] = {
    "sklearn": "sklearn",
    "onnx": "onnx",
    "pytorch": "torch",
    "torch": "torch",
    "keras": "keras",
    "tensorflow": "tensorflow",  # a SavedModel folder (a .keras/.h5 file runs on Keras)
    "tensorflow_lite": "tflite",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "catboost": "catboost",
    "huggingface": "huggingface",  # inferline's: a local save_pretrained folder
}


@dataclass(frozen=True)
class CatalogModel:
    """One registered model: `name` is as written in SQL (`ds.m`), `path` a file or glob."""

    name: str
    framework: str
    path: str
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    model_class: str | None = None
    model_params: dict[str, Any] = field(default_factory=dict)
    # ML.EVALUATE's true-value column (BigQuery's input_label_cols); default `label`.
    label_columns: list[str] = field(default_factory=list)
    # The OUTPUT(...) clause's SQL types, e.g. ARRAY<FLOAT64> (see models.outputs.declared_output_mode).
    output_types: list[str] = field(default_factory=list)
    # A trained model's fitted TRANSFORM: [output name, DuckDB SQL] (sql/training/transform.py).
    transform: list[list[str]] = field(default_factory=list)


def _exists(con: duckdb.DuckDBPyConnection) -> bool:
    rows = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND table_schema = 'main'",
        [CATALOG_TABLE],
    ).fetchall()
    return bool(rows[0][0])


def get_model(con: duckdb.DuckDBPyConnection, name: str) -> CatalogModel | None:
    """The catalog entry for `name` (case-insensitive), or None."""
    if not _exists(con):
        return None
    rows = con.execute(
        f"SELECT name, framework, path, inputs, outputs, options FROM {CATALOG_TABLE} "
        "WHERE lower(name) = lower(?)",
        [name],
    ).fetchall()
    if not rows:
        return None
    name_, framework, path, inputs, outputs, options = rows[0]
    extra = json.loads(options)
    return CatalogModel(
        name=name_,
        framework=framework,
        path=path,
        inputs=json.loads(inputs),
        outputs=json.loads(outputs),
        model_class=extra.get("model_class"),
        model_params=extra.get("model_params", {}),
        label_columns=extra.get("input_label_cols", []),
        output_types=extra.get("output_types", []),
        transform=extra.get("transform", []),
    )


def put_model(con: duckdb.DuckDBPyConnection, model: CatalogModel, *, replace: bool) -> bool:
    """Register `model`; returns False when it exists and `replace` is off (IF NOT EXISTS)."""
    con.execute(
        f"CREATE TABLE IF NOT EXISTS {CATALOG_TABLE} (name VARCHAR PRIMARY KEY, framework VARCHAR, "
        "path VARCHAR, inputs VARCHAR, outputs VARCHAR, options VARCHAR, "
        "created TIMESTAMP DEFAULT current_timestamp)"
    )
    if get_model(con, model.name) is not None:
        if not replace:
            return False
        drop_model(con, model.name)
    con.execute(
        f"INSERT INTO {CATALOG_TABLE} (name, framework, path, inputs, outputs, options) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            model.name,
            model.framework,
            model.path,
            json.dumps(model.inputs),
            json.dumps(model.outputs),
            json.dumps(
                {
                    "model_class": model.model_class,
                    "model_params": model.model_params,
                    "input_label_cols": model.label_columns,
                    "output_types": model.output_types,
                    "transform": model.transform,
                }
            ),
        ],
    )
    return True


def drop_model(con: duckdb.DuckDBPyConnection, name: str, *, if_exists: bool = True) -> None:
    if get_model(con, name) is None:
        if if_exists:
            return
        raise SqlError(f"DROP MODEL {name}: no such model; CREATE MODEL registers one")
    con.execute(f"DELETE FROM {CATALOG_TABLE} WHERE lower(name) = lower(?)", [name])
