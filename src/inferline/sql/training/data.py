"""The training query's rows as features: column kinds, the matrix, BigQuery's data splits and
its automatic preprocessing (one scikit-learn ColumnTransformer over column positions).

Preprocessing as BigQuery documents it: NULL numbers become the column's mean; numbers are
standardised except for tree models (and k-means/PCA when standardize_features/scale_features
is FALSE); strings are one-hot encoded, or label encoded for tree models; a NULL string is a
category of its own ('') and a value unseen in training encodes as nothing (trees: missing).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inferline.errors import SqlError
from inferline.sql.training.options import TrainOptions

SPLIT_SEED = 0  # BigQuery's RANDOM split is random; a fixed seed keeps a local run repeatable
# BigQuery's AUTO_SPLIT: no split under 500 rows, 20% up to 50,000, then 10,000 rows.
AUTO_SMALL, AUTO_LARGE, AUTO_EVAL_ROWS = 500, 50_000, 10_000
ROW = "__inferline_row"  # a TRANSFORM's rows carry their row number in the query (transform.py)
TREE_TYPES = (
    "boosted_tree_regressor",
    "boosted_tree_classifier",
    "random_forest_regressor",
    "random_forest_classifier",
)


def feature_kinds(table: pa.Table, options: TrainOptions, where: str) -> tuple[list[str], list[str]]:
    """(features, the string ones among them); other types fail naming the column."""
    label = options.label
    if label is not None and label not in table.column_names:
        raise SqlError(
            f"{where}: the query has no label column {label!r} (columns: {', '.join(table.column_names)}); "
            "name it with OPTIONS(input_label_cols=['column'])"
        )
    column = options.split_column
    if column is not None and column not in table.column_names:
        raise SqlError(
            f"{where}: the query has no data_split_col column {column!r} "
            f"(columns: {', '.join(table.column_names)})"
        )
    features, text = [], []
    for item in table.schema:
        if item.name in (label, column, ROW):
            continue
        t = item.type
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            text.append(item.name)
        elif not (
            pa.types.is_integer(t)
            or pa.types.is_floating(t)
            or pa.types.is_boolean(t)
            or pa.types.is_decimal(t)
        ):
            raise SqlError(
                f"{where}: feature column {item.name!r} is {t}; training takes numbers and strings "
                "(cast or drop it in the SELECT)"
            )
        features.append(item.name)
    if not features:
        raise SqlError(f"{where}: the query has no feature columns besides the label {label!r}")
    return features, text


def feature_matrix(table: pa.Table, features: list[str], text: list[str]) -> np.ndarray:
    """The columns as ML.PREDICT feeds them (sql/tensors.scalar_matrix): float64, or an object
    matrix holding strings when some inputs are text; NULL is NaN (numbers) or None (strings)."""
    parts = []
    for name in features:
        column = table.column(name)
        if name in text:
            parts.append(np.asarray(column.to_numpy(zero_copy_only=False), dtype=object))
        else:
            floats = pc.cast(column, pa.float64()).fill_null(math.nan)
            parts.append(np.asarray(floats.to_numpy(zero_copy_only=False), dtype=np.float64))
    if not text:
        return np.column_stack(parts)
    matrix = np.empty((table.num_rows, len(parts)), dtype=object)
    for j, part in enumerate(parts):
        matrix[:, j] = part
    return matrix


def split_rows(table_or_count: pa.Table | int, options: TrainOptions, where: str = "") -> np.ndarray:
    """A boolean mask of the evaluation rows (BigQuery's data_split_method): CUSTOM holds out
    the rows whose data_split_col is TRUE; SEQ the last eval fraction (default 0.2) of the rows
    ordered by data_split_col (NULLs first); RANDOM a random fraction; AUTO_SPLIT by size."""
    count = table_or_count if isinstance(table_or_count, int) else table_or_count.num_rows
    if options.split == "NO_SPLIT":
        return np.zeros(count, dtype=bool)
    if options.split in ("CUSTOM", "SEQ"):
        if isinstance(table_or_count, int) or options.split_column is None:
            raise SqlError(f"{where}: data_split_method='{options.split}' needs the rows")
        column = table_or_count.column(options.split_column)
        if options.split == "CUSTOM":
            if not pa.types.is_boolean(column.type):
                raise SqlError(
                    f"{where}: data_split_col {options.split_column!r} must be BOOL for "
                    f"data_split_method='CUSTOM' (TRUE = evaluation row), got {column.type}"
                )
            return np.asarray(column.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
        order = np.asarray(pc.array_sort_indices(column.combine_chunks(), null_placement="at_start"))
        evaluated = round(count * (options.eval_fraction or 0.2))
        mask = np.zeros(count, dtype=bool)
        mask[order[count - evaluated :]] = True
        return mask
    if options.split == "RANDOM":
        evaluated = round(count * (options.eval_fraction or 0.2))
    elif count < AUTO_SMALL:
        evaluated = 0
    elif count <= AUTO_LARGE:
        evaluated = round(count * 0.2)
    else:
        evaluated = AUTO_EVAL_ROWS
    mask = np.zeros(count, dtype=bool)
    mask[np.random.default_rng(SPLIT_SEED).permutation(count)[:evaluated]] = True
    return mask


def standardizes(options: TrainOptions) -> bool:
    if options.model_type in TREE_TYPES:
        return False
    if options.model_type == "kmeans":
        return bool(options.get("standardize_features", True))
    if options.model_type == "pca":
        return bool(options.get("scale_features", True))
    return True


def preprocessor(options: TrainOptions, features: list[str], text: list[str]) -> Any:
    """BigQuery's automatic preprocessing for the model type, unfitted."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    numeric = [i for i, name in enumerate(features) if name not in text]
    strings = [i for i, name in enumerate(features) if name in text]
    steps: list[tuple[str, Any, list[int]]] = []
    if numeric:
        scaling: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="mean"))]
        if standardizes(options):
            scaling.append(("standardize", StandardScaler()))
        steps.append(("numeric", Pipeline(scaling), numeric))
    if strings:
        encoder: Any
        if options.model_type in TREE_TYPES:
            encoder = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan)
        else:
            encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        impute = SimpleImputer(strategy="constant", missing_values=None, fill_value="")
        steps.append(("categorical", Pipeline([("impute", impute), ("encode", encoder)]), strings))
    return ColumnTransformer(steps)


def labels(table: pa.Table, options: TrainOptions, where: str) -> Any:
    """The label column as the estimator takes it (numbers for regressors, checked): numpy, or
    for tree classifiers (models/trained.py encodes the classes in Arrow) the Arrow column, as
    1M label strings cost ~0.1 s to turn into Python objects and as much to turn back."""
    if options.label is None:
        raise SqlError(f"{where}: model_type='{options.model_type}' takes no label")
    column = table.column(options.label)
    if options.classifier:
        if pc.count_distinct(column).as_py() < 2:  # hashed in Arrow: a set of 1M labels cost ~0.5 s
            raise SqlError(
                f"{where}: the label {options.label!r} has one value; a classifier needs two or more"
            )
        if options.model_type in TREE_TYPES:
            return column
        return np.asarray(column.to_numpy(zero_copy_only=False))
    values = np.asarray(column.to_numpy(zero_copy_only=False))
    try:
        return values.astype(np.float64)
    except (TypeError, ValueError):
        raise SqlError(
            f"{where}: {options.model_type} needs a numeric label; {options.label!r} is not"
        ) from None


def class_weights(y: Any, options: TrainOptions, where: str) -> np.ndarray | None:
    """Per-row weights from auto_class_weights (balanced: n / (classes * count)) or class_weights."""
    given = options.get("class_weights")
    if isinstance(y, pa.ChunkedArray | pa.Array):
        if given is None and not options.get("auto_class_weights"):
            return None
        y = np.asarray(y.to_numpy(zero_copy_only=False))
    if options.get("auto_class_weights"):
        classes, counts = np.unique(y, return_counts=True)
        weight = {
            str(c): len(y) / (len(classes) * n)
            for c, n in zip(classes.tolist(), counts.tolist(), strict=True)
        }
    elif given is not None:
        seen = {str(v) for v in y.tolist()}
        unknown = sorted(str(k) for k in given if str(k) not in seen)
        if unknown:
            raise SqlError(
                f"{where}: class_weights names label(s) {', '.join(unknown)} not in the training rows"
            )
        weight = {str(k): float(v) for k, v in given.items()}
    else:
        return None
    # Labels class_weights leaves out weigh 1 (BigQuery's default).
    return np.asarray([weight.get(str(v), 1.0) for v in y.tolist()], dtype=np.float64)
