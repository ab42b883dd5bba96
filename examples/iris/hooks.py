"""Hooks and steps used by examples/iris/prepared.yaml (see README: Processing around the model)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


class TopLabels:
    """postprocess: the two most likely class names, from the model's probabilities (the
    README's example, as it is there)."""

    names = ["setosa", "versicolor", "virginica"]

    def setup(self, model: Any) -> None:
        self.classes = list(model.classes_)

    def postprocess(self, batch: pa.RecordBatch, outputs: Any) -> dict[str, Any]:
        order = np.argsort(-outputs.scores, axis=1)[:, :2]
        return {"top2": [[self.names[self.classes[i]] for i in row] for row in order]}


def add_columns(batch: pa.RecordBatch) -> pa.RecordBatch:
    """map step: the sepal area, computed on the whole Arrow batch."""
    area = pc.multiply(batch.column("sepal_length"), batch.column("sepal_width"))
    return batch.append_column("sepal_area", area)
