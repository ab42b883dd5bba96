"""The `output:` mapping, over real Arrow batches."""

from __future__ import annotations

import pyarrow as pa
import pytest

from inferline.engine.output import OutputMapping
from inferline.errors import SpecError


def _batch() -> pa.RecordBatch:
    return pa.RecordBatch.from_pydict(
        {
            "key": ["m1", "m2"],
            "feature": [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]],
            "user": [{"id": 7, "name": "ann"}, {"id": 8, "name": "bob"}],
            "prediction": pa.array([0, 1], type=pa.int64()),
            "model_id": ["iris/1", "iris/1"],
        }
    )


def test_nested_struct_and_integer_columns() -> None:
    mapping = OutputMapping(
        {"input": {"sepal_length": "feature[0]", "petal_width": "feature[3]"}, "predict": "prediction"}
    )
    out = mapping.apply(_batch())
    assert out.schema.names == ["key", "input", "predict"]
    assert out.schema.field("input").type == pa.struct(
        [("sepal_length", pa.float64()), ("petal_width", pa.float64())]
    )
    assert out.schema.field("predict").type == pa.int64()
    assert out.to_pylist()[1] == {
        "key": "m2",
        "input": {"sepal_length": 6.2, "petal_width": 1.3},
        "predict": 1,
    }


def test_struct_fields_and_an_explicit_key() -> None:
    mapping = OutputMapping({"key": "user.id", "who": "user.name", "model": "model_id"})
    assert mapping.apply(_batch()).to_pylist()[0] == {"key": 7, "who": "ann", "model": "iris/1"}


def test_unknown_column() -> None:
    mapping = OutputMapping({"predict": "predictions"}, origin="p.yaml")
    with pytest.raises(
        SpecError, match=r"p.yaml: output.predict: column 'predictions' not found \(columns: key,"
    ):
        mapping.apply(_batch())


def test_not_an_expression() -> None:
    with pytest.raises(SpecError, match=r"p.yaml: output.a.b: 'feature\[x\]' is not a column expression"):
        OutputMapping({"a": {"b": "feature[x]"}}, origin="p.yaml")
    with pytest.raises(SpecError, match=r"output.n: 3 is not a column expression"):
        OutputMapping({"n": 3})


def test_empty_mapping() -> None:
    with pytest.raises(SpecError, match=r"output: expected a mapping of column names to expressions"):
        OutputMapping({})


def test_index_out_of_range() -> None:
    with pytest.raises(SpecError, match=r"output.x: 'feature\[9\]': index 9 is out of range for some row"):
        OutputMapping({"x": "feature[9]"}).apply(_batch())


def test_index_into_a_scalar_and_missing_field() -> None:
    with pytest.raises(SpecError, match=r"output.x: 'prediction\[0\]': \[0\] needs a list, got int64"):
        OutputMapping({"x": "prediction[0]"}).apply(_batch())
    with pytest.raises(SpecError, match=r"output.x: 'user.age': no field 'age' in struct<id: int64"):
        OutputMapping({"x": "user.age"}).apply(_batch())


def test_batch_pipelines_use_the_mapping_too(project: object) -> None:
    from inferline.engine.local import LocalEngine
    from inferline.pipeline import parse_spec

    spec = parse_spec(
        {
            "source": {"kind": "csv", "path": "examples/iris/data/iris.csv"},
            "model": {
                "name": "iris",
                "uri": "examples/iris/models/iris-*.onnx",
                "inputs": ["sepal_length", "sepal_width", "petal_length", "petal_width"],
            },
            "key": "id",
            "output": {"flower": {"petal_length": "petal_length"}, "predict": "prediction"},
            "sink": {"kind": "parquet", "path": "out.parquet"},
        }
    )
    summary = LocalEngine(spec).run()
    assert summary.rows_predicted == 150
    import pyarrow.parquet as pq

    table = pq.read_table("out.parquet")
    assert table.schema.names == ["key", "flower", "predict"]
    assert table.slice(0, 1).to_pylist() == [{"key": "0", "flower": {"petal_length": 1.4}, "predict": 0}]
