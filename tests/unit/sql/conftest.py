"""Fixtures for the SQL tests: a connection with the iris model registered and a flowers table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest

import inferline.sql
from inferline.sql import SqlConnection


@pytest.fixture
def iris_model(iris_example: Path) -> Any:
    return joblib.load(iris_example / "models" / "iris-1.joblib")


@pytest.fixture
def con(iris_example: Path) -> Iterator[SqlConnection]:
    """In-memory DuckDB with `flowers` (150 iris rows) and models `ds.iris` (.joblib), `ds.iris_onnx`."""
    connection = inferline.sql.connect()
    models = iris_example / "models"
    connection.sql(
        f"CREATE TABLE flowers AS SELECT * FROM read_csv('{iris_example / 'data' / 'iris.csv'}');"
        f"CREATE MODEL ds.iris OPTIONS(model_type='sklearn', model_path='{models}/iris-*.joblib');"
        f"CREATE MODEL ds.iris_onnx OPTIONS(model_type='onnx', model_path='{models}/iris-*.onnx');"
    )
    try:
        yield connection
    finally:
        connection.close()
