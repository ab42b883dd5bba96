"""`CREATE MODEL ds.m OPTIONS(model_type=..., ...) AS SELECT ...`: BigQuery ML's training, run
locally with scikit-learn and XGBoost.

The query runs in DuckDB to Arrow; every column but the label (`input_label_cols`, default
`label`; none for kmeans/pca) and the data_split_col is a feature. BigQuery's automatic
preprocessing (data.py) and the estimator (linear.py, trees.py, dnn.py, clustering.py) form one
scikit-learn Pipeline, saved with skops (no pickle; XGBoost boosters as their JSON text) as the
next version of `ds.m` in the model store and registered in the catalog (fit.py), so
ML.PREDICT, ML.EVALUATE, pipelines and `inferline serve` all run it. ML.PREDICT's columns are
BigQuery's (outputs.py): `predicted_<label>` (+ `predicted_<label>_probs`, a list of {label,
prob}), kmeans' CENTROID_ID and NEAREST_CENTROIDS_DISTANCE, pca's principal_component_k.
"""

from __future__ import annotations

from inferline.sql.training.data import feature_matrix, split_rows
from inferline.sql.training.fit import fit, output_names, train
from inferline.sql.training.options import MODEL_TYPES, TrainOptions, is_training, parse_options

__all__ = [
    "MODEL_TYPES",
    "TrainOptions",
    "feature_matrix",
    "fit",
    "is_training",
    "output_names",
    "parse_options",
    "split_rows",
    "train",
]
