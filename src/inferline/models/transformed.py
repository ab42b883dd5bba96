"""A model trained with `CREATE MODEL ... TRANSFORM(...)`, run outside SQL.

BigQuery ML saves the TRANSFORM with the model and applies it at prediction. In SQL, ML.PREDICT
applies it from the catalog (sql/training/transform.py); pipelines, `inferline serve` and Beam
get it from the store version's metadata `transform`, which CREATE MODEL writes:

    {"inputs": [[column, DuckDB type], ...],   # the training query's columns it reads
     "outputs": [[feature, DuckDB SQL], ...],  # each feature, fitted statistics as literals
     "macros": ["CREATE OR REPLACE TEMP MACRO __ml_...", ...]}  # the helpers the SQL calls

`TransformedHandler` wraps the framework's handler: each batch's raw columns go through the
outputs in a private in-memory DuckDB (external access off: the stored SQL reads no files), and
the model gets the features it was trained on, so a request or a pipeline row carries the
columns the training query had, as ML.PREDICT's input does.

Example:
    >>> spec = {"inputs": [["x", "DOUBLE"]], "outputs": [["x2", "x * 2"]], "macros": []}
    >>> Transform.parse(spec, features=["x2"], where="model m/1").sql
    'SELECT x * 2 AS "x2" FROM (SELECT CAST("x" AS DOUBLE) AS "x" FROM __inferline_batch)'
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inferline.errors import ModelError
from inferline.models.base import ModelHandler, Prediction

BATCH = "__inferline_batch"
MACRO_PREFIX = "CREATE OR REPLACE TEMP MACRO __"
TEXT_TYPES = ("VARCHAR", "STRING", "TEXT")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class Transform:
    """A saved TRANSFORM: raw input columns (name, DuckDB type) -> the model's features."""

    inputs: list[tuple[str, str]]
    outputs: list[tuple[str, str]]
    macros: list[str]
    features: list[str]
    where: str

    @classmethod
    def parse(cls, spec: Any, *, features: list[str], where: str) -> Transform:
        """The metadata's `transform`, checked (a hand-edited store fails here, naming it)."""
        try:
            inputs = [(str(n), str(t)) for n, t in spec["inputs"]]
            outputs = [(str(n), str(sql)) for n, sql in spec["outputs"]]
            macros = [str(m) for m in spec.get("macros", [])]
        except (KeyError, TypeError, ValueError):
            raise ModelError(
                f"{where}: metadata 'transform' must hold inputs [[column, type]], outputs "
                "[[feature, sql]] and macros (as CREATE MODEL ... TRANSFORM writes it)"
            ) from None
        strange = [m for m in macros if not m.startswith(MACRO_PREFIX)]
        if strange:
            raise ModelError(
                f"{where}: metadata 'transform' holds a statement that is not a macro: {strange[0]!r}"
            )
        missing = sorted(set(features) - {n for n, _ in outputs})
        if missing:
            raise ModelError(f"{where}: metadata 'transform' gives no feature {', '.join(missing)}")
        return cls(inputs, outputs, macros, list(features), where)

    @property
    def columns(self) -> list[str]:
        return [name for name, _ in self.inputs]

    @property
    def text(self) -> list[str]:
        return [name for name, kind in self.inputs if kind.upper() in TEXT_TYPES]

    @property
    def sql(self) -> str:
        given = ", ".join(f"{sql} AS {_quote(name)}" for name, sql in self.outputs if name in self.features)
        raw = ", ".join(f"CAST({_quote(n)} AS {kind}) AS {_quote(n)}" for n, kind in self.inputs)
        return f"SELECT {given} FROM (SELECT {raw} FROM {BATCH})"


class TransformedHandler:
    """`inner`, with the saved TRANSFORM applied to every batch first; everything else (batch
    size, scores, ...) is the inner handler's."""

    def __init__(self, inner: ModelHandler, transform: Transform) -> None:
        self.inner = inner
        self.transform = transform
        self.framework = inner.framework
        self.batch_size = inner.batch_size
        self._con: Any = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        inner = self.__dict__.get("inner")
        if inner is None or name.startswith("__"):  # copying/unpickling: not set up yet
            raise AttributeError(name)
        return getattr(inner, name)

    def load(self, uri: str) -> Any:
        return self.inner.load(uri)

    def text_inputs(self, model: Any) -> list[str]:
        """The raw string columns the TRANSFORM reads (fed as text)."""
        return self.transform.text

    def predict(self, model: Any, inputs: np.ndarray) -> Prediction:
        return self.inner.predict(model, self.features(model, inputs))

    def features(self, model: Any, inputs: np.ndarray) -> np.ndarray:
        """Raw rows (the TRANSFORM's input columns, in order) -> the model's feature matrix."""
        table = self._apply(_raw_table(inputs, self.transform))
        text = set(getattr(model, "text_inputs_", []))
        parts = []
        for name in self.transform.features:
            column = table.column(name)
            if name in text:
                parts.append(
                    np.asarray(pc.cast(column, pa.string()).to_numpy(zero_copy_only=False), dtype=object)
                )
            else:
                floats = pc.cast(column, pa.float64()).fill_null(np.nan)
                parts.append(np.asarray(floats.to_numpy(zero_copy_only=False), dtype=np.float64))
        if not text:
            return np.column_stack(parts) if parts else np.empty((table.num_rows, 0))
        matrix = np.empty((table.num_rows, len(parts)), dtype=object)
        for j, part in enumerate(parts):
            matrix[:, j] = part
        return matrix

    def _apply(self, raw: pa.Table) -> pa.Table:
        import duckdb

        with self._lock:  # one private connection; DuckDB connections are not shared by threads
            try:
                if self._con is None:
                    con = duckdb.connect(":memory:", config={"enable_external_access": False})
                    for macro in self.transform.macros:
                        con.execute(macro)
                    self._con = con
                self._con.register(BATCH, raw)
                try:
                    return self._con.sql(self.transform.sql).to_arrow_table()
                finally:
                    self._con.unregister(BATCH)
            except duckdb.Error as exc:
                raise ModelError(
                    f"{self.transform.where}: its TRANSFORM fails on this batch: {str(exc).splitlines()[0]}"
                ) from None


def _raw_table(inputs: np.ndarray, transform: Transform) -> pa.Table:
    """The engine's matrix (numbers as float64 with NaN for missing, text as str/None) as the
    TRANSFORM's input table, missing values NULL as in SQL."""
    matrix = np.asarray(inputs)
    if matrix.ndim != 2 or matrix.shape[1] != len(transform.inputs):
        raise ModelError(
            f"{transform.where}: expected rows of {len(transform.inputs)} values "
            f"({', '.join(transform.columns)}), the TRANSFORM's input columns; got shape {list(matrix.shape)}"
        )
    text = set(transform.text)
    arrays = []
    for j, name in enumerate(transform.columns):
        values = matrix[:, j]
        if name in text:
            arrays.append(pa.array([None if v is None else str(v) for v in values.tolist()], pa.string()))
        else:
            floats = np.asarray(values, dtype=np.float64)
            arrays.append(pa.array(floats, mask=np.isnan(floats)))
    return pa.Table.from_arrays(arrays, names=transform.columns)


def with_transform(
    handler: ModelHandler, spec: Any, *, features: list[str], where: str
) -> TransformedHandler:
    """`handler` applying the store metadata's `transform` to every batch."""
    return TransformedHandler(handler, Transform.parse(spec, features=features, where=where))
