"""ML.PREDICT's columns for trained models that are not a label and its probabilities:
kmeans' CENTROID_ID and NEAREST_CENTROIDS_DISTANCE (every centroid as {CENTROID_ID, DISTANCE},
nearest first), pca's principal_component_1..k.

Example:
    >>> shaped_outputs(object()) is None
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

# models/trained.py imports scikit-learn (~1.5 s CPU): the functions import it where they use it,
# so `inferline sql` runs that touch no trained model do not pay for it.

DISTANCES = pa.list_(pa.struct([pa.field("CENTROID_ID", pa.int64()), pa.field("DISTANCE", pa.float64())]))


def _final(model: Any) -> Any:
    steps = getattr(model, "steps", None)
    return steps[-1][1] if steps else None


def shaped_outputs(model: Any) -> list[tuple[str, pa.DataType]] | None:
    """(name, type) of each output column, or None for models with the usual outputs."""
    final = _final(model)
    if final is None:  # not a scikit-learn Pipeline: nothing to import scikit-learn for
        return None
    from inferline.models.trained import Centroids, Components

    if isinstance(final, Centroids):
        return [("CENTROID_ID", pa.int64()), ("NEAREST_CENTROIDS_DISTANCE", DISTANCES)]
    if isinstance(final, Components):
        count = int(final.pca_.n_components_)
        return [(f"principal_component_{k}", pa.float64()) for k in range(1, count + 1)]
    return None


def shaped_arrays(model: Any, matrix: np.ndarray) -> list[pa.Array]:
    """The output columns for a chunk's rows (`model` is a Pipeline shaped_outputs knows)."""
    from inferline.models.trained import Components

    final = _final(model)
    processed = model[:-1].transform(matrix)
    if isinstance(final, Components):
        values = final.predict(processed)
        return [pa.array(values[:, k], pa.float64()) for k in range(values.shape[1])]
    distances = final.transform(processed)
    order = np.argsort(distances, axis=1, kind="stable")
    nearest = np.take_along_axis(distances, order, axis=1)
    count, k = distances.shape
    pairs = pa.StructArray.from_arrays(
        [pa.array((order + 1).reshape(-1), pa.int64()), pa.array(nearest.reshape(-1), pa.float64())],
        fields=list(DISTANCES.value_type),
    )
    offsets = pa.array(np.arange(0, (count + 1) * k, k, dtype=np.int32))
    return [pa.array(order[:, 0] + 1, pa.int64()), pa.ListArray.from_arrays(offsets, pairs)]
