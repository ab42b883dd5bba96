"""`inferline.beam.ModelHandler`: inferline's handlers inside Beam's RunInference."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import joblib
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier

from inferline.beam import ModelHandler, row_features
from inferline.beam_import import import_run_inference
from inferline.errors import InputError
from inferline.examples.iris import FEATURES
from inferline.pipeline import BatchSpec, ModelSpec
from tests.conftest import subprocess_env
from tests.onnx_models import two_output_graph

# Beam's RunInference module, imported as inferline imports it (without torch: collection stays cheap).
PredictionResult = import_run_inference().PredictionResult
RunInference = import_run_inference().RunInference


@pytest.fixture
def models(tmp_path: Path, iris_example: Path) -> Path:
    """iris-1.joblib (the example's SVC) and iris-2.joblib (always predicts 2)."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(iris_example / "models/iris-1.joblib", folder / "iris-1.joblib")
    iris = load_iris()
    constant = DummyClassifier(strategy="constant", constant=2).fit(iris.data, iris.target)
    joblib.dump(constant, folder / "iris-2.joblib")
    return folder


def test_loads_the_newest_version_and_predicts_like_the_model(models: Path) -> None:
    handler = ModelHandler(str(models / "iris-*.joblib"))
    model = handler.load_model()
    assert model.model_id == "iris/2"
    results = list(handler.run_inference([np.array([5.1, 3.5, 1.4, 0.2]), [6.0, 3.0, 5.0, 2.0]], model))
    assert [r.inference["prediction"] for r in results] == [2, 2]
    assert [r.model_id for r in results] == ["iris/2", "iris/2"]
    assert results[0].inference["scores"] == [0.0, 0.0, 1.0]


def test_dict_rows_use_the_named_inputs(models: Path) -> None:
    handler = ModelHandler(str(models / "iris-1.joblib"), inputs=FEATURES)
    model = handler.load_model()
    iris = load_iris()
    rows = [dict(zip(FEATURES, map(float, x), strict=True)) | {"id": i} for i, x in enumerate(iris.data[:20])]
    expected = joblib.load(models / "iris-1.joblib").predict(iris.data[:20]).tolist()
    got = [r.inference["prediction"] for r in handler.run_inference(rows, model)]
    assert got == expected
    assert model.model_id == "iris/1"


def test_update_model_path_swaps_and_an_empty_path_goes_back_to_the_newest(models: Path) -> None:
    handler = ModelHandler(str(models / "iris-*.joblib"))
    handler.update_model_path(str(models / "iris-1.joblib"))
    assert handler.load_model().model_id == "iris/1"
    handler.update_model_path("")
    assert handler.load_model().model_id == "iris/2"


def test_batching_comes_from_the_spec() -> None:
    spec = ModelSpec(name="iris", uri="models/iris-*.onnx")
    batch = BatchSpec(max_size=100, max_wait_ms=2500)
    assert ModelHandler.from_spec(spec, batch).batch_elements_kwargs() == {
        "min_batch_size": 100,
        "max_batch_size": 100,
    }
    assert ModelHandler.from_spec(spec, batch, streaming=True).batch_elements_kwargs() == {
        "min_batch_size": 1,
        "max_batch_size": 100,
        "max_batch_duration_secs": 2,
    }
    untimed = ModelHandler.from_spec(spec, batch, streaming=True, timed_batches=False)
    assert "max_batch_duration_secs" not in untimed.batch_elements_kwargs()
    assert ModelHandler(spec.uri or "").get_metrics_namespace() == "inferline_iris"


def test_runs_inside_run_inference_on_the_direct_runner(models: Path) -> None:
    handler = ModelHandler(str(models / "iris-1.joblib"), max_batch_size=2)
    examples = [[5.1, 3.5, 1.4, 0.2], [6.9, 3.1, 5.4, 2.1]]
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as pipeline:
        out = (
            pipeline
            | beam.Create(examples)
            | RunInference(handler)
            | beam.Map(lambda r: (r.example, r.inference["prediction"], r.model_id))
        )
        assert_that(out, equal_to([(examples[0], 0, "iris/1"), (examples[1], 2, "iris/1")]))
    assert isinstance(PredictionResult([1], {}, "x"), tuple)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"a": "abc", "b": 1}, "field 'a': 'abc' is not a number"),
        ({"a": None, "b": 1}, "field 'a' is empty, expected a number"),
        ({"b": 1}, r"input column 'a' not found \(columns: b\)"),
    ],
)
def test_row_features_errors_name_the_field(row: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        row_features(row, ["a", "b"])


def test_row_features_of_a_model_that_imputes_keep_empty_fields_as_nan() -> None:
    values = row_features({"a": None, "b": 1}, ["a", "b"], missing=True)
    assert np.isnan(values[0]) and values[1] == 1.0


def test_row_features_reads_a_list_field_and_nested_fields() -> None:
    assert row_features({"feature": [1, 2, 3]}, ["feature"]).tolist() == [1.0, 2.0, 3.0]
    assert row_features({"m": {"x": "2"}, "y": 3}, ["m.x", "y"]).tolist() == [2.0, 3.0]
    assert row_features({"id": 1, "name": "a", "v": 2.5}, []).tolist() == [1.0, 2.5]


def test_examples_of_different_lengths_are_refused(models: Path) -> None:
    handler = ModelHandler(str(models / "iris-1.joblib"))
    with pytest.raises(InputError, match=r"examples of different shapes 3, 4 in one batch"):
        list(handler.run_inference([[1, 2, 3, 4], [1, 2, 3]], handler.load_model()))


def test_without_apache_beam_the_error_names_the_extra() -> None:
    code = "import sys; sys.modules['apache_beam'] = None; import inferline.beam"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=60
    )
    assert result.returncode != 0
    assert "apache_beam is not installed: pip install 'inferline[beam]'" in result.stderr


def test_a_store_model_loads_its_current_version_and_inputs(models: Path, tmp_path: Path) -> None:
    from inferline.engine.beam import model_inputs
    from inferline.models.store import ModelStore

    store = ModelStore(str(tmp_path / "store"))
    store.add("flowers", str(models / "iris-1.joblib"), inputs=FEATURES)
    spec = ModelSpec(name="flowers", store=str(tmp_path / "store"))
    assert model_inputs(spec) == FEATURES
    handler = ModelHandler.from_spec(spec)
    model = handler.load_model()
    assert model.model_id == "flowers/1"
    row = dict(zip(FEATURES, [6.9, 3.1, 5.4, 2.1], strict=True))
    (result,) = handler.run_inference([row], model)
    assert result.inference["prediction"] == 2


def test_a_handler_without_a_model_is_refused() -> None:
    with pytest.raises(InputError, match="ModelHandler needs a model file or glob, or store= and name="):
        ModelHandler(store="model_store")


def test_run_spec_brings_a_whole_spec_into_your_own_pipeline(models: Path, tmp_path: Path) -> None:
    # A step, the model and a label map, from a YAML spec, on rows this pipeline makes itself.
    import yaml

    from inferline.beam import RunSpec

    (tmp_path / "labels.txt").write_text("setosa\nversicolor\nvirginica\n")
    spec = {
        "name": "mine",
        "source": {"kind": "csv", "path": "unused.csv"},
        "steps": [{"sql": "SELECT * FROM input WHERE petal_length > 1.5"}],
        "model": {
            "name": "iris",
            "uri": str(models / "iris-1.joblib"),
            "inputs": FEATURES,
            "labels": str(tmp_path / "labels.txt"),
        },
        "keep": ["id"],
        "sink": {"kind": "parquet", "path": "unused.parquet"},
    }
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(spec))
    svc = joblib.load(models / "iris-1.joblib")
    data = load_iris().data
    rows = [
        (f"k{i}", {"id": i, **dict(zip(FEATURES, map(float, data[i]), strict=True))})
        for i in range(0, 150, 7)
    ]
    kept = [(k, r) for k, r in rows if r["petal_length"] > 1.5]
    names = ["setosa", "versicolor", "virginica"]
    labels = svc.predict(np.array([[r[f] for f in FEATURES] for _, r in kept])).tolist()
    expected = [(k, r["id"], p, names[p]) for (k, r), p in zip(kept, labels, strict=True)]
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as pipeline:
        out = pipeline | beam.Create(rows) | RunSpec(str(tmp_path / "mine.yaml"))
        got = out["results"] | beam.Map(lambda r: (r["key"], r["id"], r["prediction"], r["label"]))
        assert_that(got, equal_to(expected), label="results")
        assert_that(out["dead"], equal_to([]), label="dead")


def test_dict_rows_reach_a_model_with_a_text_input_as_text(tmp_path: Path) -> None:
    pytest.importorskip("skl2onnx")
    from tests.onnx_models import iris_frame, per_column_pipeline

    model = per_column_pipeline(tmp_path / "garden-1.onnx", with_text=True)
    handler = ModelHandler(str(tmp_path / "garden-*.onnx"))
    loaded = handler.load_model()
    frame = iris_frame().iloc[:12]
    rows = frame.drop(columns="species").to_dict("records")
    got = [r.inference["scores"] for r in handler.run_inference(rows, loaded)]
    np.testing.assert_allclose(got, model.predict_proba(frame.drop(columns="species")), atol=1e-5)
    with pytest.raises(InputError, match="field 'garden' is empty, expected text"):
        handler.run_inference([{**rows[0], "garden": None}], loaded)


def test_a_model_with_several_outputs_gives_a_field_per_output(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    two_output_graph(tmp_path / "multi-1.onnx")
    handler = ModelHandler(str(tmp_path / "multi-*.onnx"))
    results = list(handler.run_inference([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]], handler.load_model()))
    assert [r.inference for r in results] == [
        {"total": 6.0, "doubled": [2.0, 4.0, 6.0]},
        {"total": 3.5, "doubled": [1.0, -2.0, 8.0]},
    ]


def test_a_sql_trained_transform_model_takes_raw_dict_rows_with_nulls(tmp_path: Path) -> None:
    """CREATE MODEL ... TRANSFORM in SQL, then Beam: the stored TRANSFORM runs on the raw
    columns and NULL features are imputed, as ML.PREDICT answers (issue 24)."""
    import pyarrow as pa

    import inferline.sql

    rng = np.random.default_rng(2)
    x = rng.normal(5.0, 2.0, 60)
    colour = rng.choice(np.array(["red", "blue"]), 60)
    table = pa.table({"x": x, "colour": colour, "y": 2 * x + np.where(colour == "red", 3.0, 0.0)})
    con = inferline.sql.connect(store=str(tmp_path / "store"))
    try:
        con.raw.register("generated", table)
        con.sql(
            "CREATE MODEL ds.m TRANSFORM(ML.MIN_MAX_SCALER(x) OVER () AS x_scaled, colour, y) "
            "OPTIONS(model_type='linear_reg', input_label_cols=['y']) AS SELECT * FROM generated"
        )
        expected = con.sql(
            "SELECT predicted_y FROM ML.PREDICT(MODEL ds.m, (SELECT * FROM (VALUES (1.5, 'red', 1), "
            "(NULL, 'blue', 2), (6.0, NULL, 3)) AS t(x, colour, id))) ORDER BY id"
        ).fetchall()
    finally:
        con.close()
    handler = ModelHandler(store=str(tmp_path / "store"), name="ds.m")
    model = handler.load_model()
    rows = [{"x": 1.5, "colour": "red"}, {"x": None, "colour": "blue"}, {"x": 6.0, "colour": None}]
    got = [r.inference["prediction"] for r in handler.run_inference(rows, model)]
    assert got == pytest.approx([v for (v,) in expected], rel=1e-9)
