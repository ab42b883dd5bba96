"""Spec -> Beam translation, run on the DirectRunner (streams with TestStream)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import apache_beam as beam
import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage, ReadFromPubSub
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import FixedWindows, TimestampedValue
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier

from inferline.beam_import import import_run_inference
from inferline.engine.beam import build, pipeline_options, process_rows, run_beam
from inferline.engine.beam_io import DEAD, ParseMessage, bigquery_args, kafka_config, pubsub_read
from inferline.engine.local import run_pipeline
from inferline.errors import MissingExtraError, SpecError
from inferline.examples.iris import FEATURES
from inferline.pipeline import PipelineSpec, SinkSpec, parse_spec

ModelMetadata = import_run_inference().ModelMetadata  # as inferline imports it: without torch
IRIS = load_iris()


@pytest.fixture
def models(tmp_path: Path, iris_example: Path) -> Path:
    """iris-1.joblib (the example's SVC) and iris-2.joblib (always predicts 2)."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(iris_example / "models/iris-1.joblib", folder / "iris-1.joblib")
    constant = DummyClassifier(strategy="constant", constant=2).fit(IRIS.data, IRIS.target)
    joblib.dump(constant, folder / "iris-2.joblib")
    return folder


def _row(i: int) -> tuple[str, dict[str, Any]]:
    return f"k{i}", {"id": i, **dict(zip(FEATURES, map(float, IRIS.data[i]), strict=True))}


def _direct(*, streaming: bool = False) -> PipelineOptions:
    options = PipelineOptions(["--runner=DirectRunner"])
    options.view_as(StandardOptions).streaming = streaming
    return options


def test_a_model_swap_mid_stream_tags_rows_with_both_model_ids(models: Path) -> None:
    # Rows and model updates arrive on one TestStream; each 10 s window's rows see the
    # model announced in that window, as WatchFilePattern announces new files.
    newer = str(models / "iris-2.joblib")
    stream = (
        test_stream.TestStream()
        .add_elements([TimestampedValue(ModelMetadata("", ""), 0)], tag="models")
        .add_elements([TimestampedValue(_row(i), 1 + i) for i in range(3)], tag="rows")
        .add_elements([TimestampedValue(ModelMetadata(newer, "iris-2"), 10)], tag="models")
        .advance_watermark_to(10, tag="rows")
        .advance_watermark_to(10, tag="models")
        .add_elements([TimestampedValue(_row(i), 8 + i) for i in range(3, 6)], tag="rows")
        .advance_watermark_to_infinity(tag="rows")
        .advance_watermark_to_infinity(tag="models")
    )
    model = {
        "name": "iris",
        "uri": str(models / "iris-*.joblib"),
        "inputs": FEATURES,
        "version": "1",
        "watch": True,
    }
    spec = _spec(model=model, batch={"max_size": 8})
    svc = joblib.load(models / "iris-1.joblib")
    expected = [(f"k{i}", int(svc.predict(IRIS.data[i : i + 1])[0]), "iris/1") for i in range(3)]
    expected += [(f"k{i}", 2, "iris/2") for i in range(3, 6)]
    with beam.Pipeline(options=_direct(streaming=True)) as pipeline:
        streams = pipeline | stream
        rows = streams["rows"] | "RowWindows" >> beam.WindowInto(FixedWindows(10))
        updates = streams["models"] | "ModelWindows" >> beam.WindowInto(FixedWindows(10))
        out = process_rows(rows, spec, streaming=True, model_metadata=updates)
        got = out.results | beam.Map(lambda r: (r["key"], r["prediction"], r["model_id"]))
        assert_that(got, equal_to(expected))


def test_bad_rows_and_failing_batches_land_in_the_dead_letters(models: Path) -> None:
    spec = _spec(model={"name": "iris", "uri": str(models / "iris-1.joblib"), "inputs": FEATURES})
    good, (_, bad) = _row(0), _row(1)
    bad = ("k1", {**bad, "sepal_width": "abc"})
    with beam.Pipeline(options=_direct()) as pipeline:
        out = process_rows(pipeline | beam.Create([good, bad]), spec)
        assert_that(out.results | beam.Map(lambda r: r["key"]), equal_to(["k0"]), label="results")
        dead = out.dead | beam.Map(lambda d: (d["key"], d["error"], d["stage"], d["model_id"]))
        expected = [("k1", "field 'sepal_width': 'abc' is not a number", "features", "iris/1")]
        assert_that(dead, equal_to(expected), label="dead")

    # Three features for a model trained on four: the model raises on the whole batch.
    narrow = _spec(model={"name": "iris", "uri": str(models / "iris-1.joblib"), "inputs": "feature"})
    rows = [(f"k{i}", {"feature": [1.0, 2.0, 3.0]}) for i in range(2)]
    with beam.Pipeline(options=_direct()) as pipeline:
        out = process_rows(pipeline | beam.Create(rows), narrow)
        dead = out.dead | beam.Map(lambda d: (d["key"], d["stage"], d["error"].split(":")[0]))
        failed = [("k0", "predict", "model iris/1 failed"), ("k1", "predict", "model iris/1 failed")]
        assert_that(dead, equal_to(failed))


def test_without_a_model_rows_pass_through() -> None:
    with beam.Pipeline(options=_direct()) as pipeline:
        out = process_rows(pipeline | beam.Create([("a", {"x": 1})]), _spec(model=None))
        assert_that(out.results, equal_to([{"key": "a", "x": 1}]))


def test_options_name_the_direct_runner_unless_given() -> None:
    assert pipeline_options([]).view_as(StandardOptions).runner == "DirectRunner"
    options = pipeline_options(["--runner=DataflowRunner", "--project=p"], streaming=True)
    assert options.view_as(StandardOptions).runner == "DataflowRunner"
    assert options.view_as(StandardOptions).streaming is True


def _spec(**overrides: Any) -> PipelineSpec:
    raw: dict[str, Any] = {
        "name": "iris",
        "source": {"kind": "csv", "path": "data/*.csv"},
        "model": {"name": "iris", "uri": "models/iris-*.joblib", "inputs": FEATURES},
        "sink": {"kind": "parquet", "path": "out/p.parquet"},
    }
    raw.update(overrides)
    return parse_spec(raw, origin="p.yaml")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"sink": {"kind": "duckdb", "path": "w.duckdb"}},
            "p.yaml: sink kind 'duckdb' writes a local file that Beam workers cannot share; "
            "under --runner beam use kind: parquet",
        ),
        (
            {"dead_letter": {"kind": "duckdb", "path": "w.duckdb", "table": "e"}},
            "p.yaml: dead_letter kind 'duckdb'",
        ),
        ({"sink": {"kind": "topic", "topic": "t"}}, "p.yaml: sink kind 'topic' cannot run under --runner"),
        ({"source": {"kind": "table", "path": "w.duckdb"}}, "p.yaml: source kind 'table' cannot run under"),
    ],
)
def test_what_cannot_run_distributed_is_refused_in_one_line(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        build(beam.Pipeline(options=_direct()), _spec(**overrides))


def test_limit_is_refused() -> None:
    with pytest.raises(SpecError, match="--limit is not supported with --runner beam"):
        run_beam(_spec(), [], limit=5)


def test_pubsub_source_translation(tmp_path: Path) -> None:
    spec = _spec(
        source={"kind": "pubsub", "topic": "projects/my-project/topics/iris"},
        key="id",
        sink={"kind": "parquet", "path": str(tmp_path / "p.parquet")},
    )
    read = pubsub_read(spec)
    assert isinstance(read, ReadFromPubSub)
    assert read.with_attributes and read._source.full_topic == "projects/my-project/topics/iris"
    subscription = "projects/my-project/subscriptions/s"
    by_subscription = _spec(source={"kind": "pubsub", "options": {"subscription": subscription}})
    assert pubsub_read(by_subscription)._source.full_subscription == subscription
    with pytest.raises(SpecError, match="source kind 'pubsub' needs topic: projects/<project>/topics/<name>"):
        pubsub_read(_spec(source={"kind": "pubsub"}))
    # The whole graph builds: Pub/Sub -> parse -> RunInference -> windowed Parquet files.
    pipeline = beam.Pipeline(options=_direct(streaming=True))
    build(pipeline, spec, streaming=True)
    labels = {t.full_label for t in pipeline.transforms_stack[0].parts}
    assert {"ReadFromPubSub", "ParseMessages", "RunInference", "ResultsWindow", "ResultsToFiles"} <= labels


def test_pubsub_and_kafka_messages_become_keyed_rows() -> None:
    messages = [
        PubsubMessage(json.dumps({"id": 7, "x": 1.5}).encode(), {}, message_id="m1"),
        PubsubMessage(b"not json", {}, message_id="m2"),
    ]
    with beam.Pipeline(options=_direct()) as pipeline:
        parsed = (
            pipeline
            | beam.Create(messages)
            | beam.ParDo(ParseMessage("pubsub", "id")).with_outputs(DEAD, main="rows")
        )
        assert_that(parsed.rows, equal_to([("7", {"id": 7, "x": 1.5})]), label="rows")
        dead = parsed[DEAD] | beam.Map(lambda d: (d["key"], d["stage"], d["error"].split(":")[0]))
        assert_that(dead, equal_to([("m2", "parse", "message m2")]), label="dead")

    kafka = beam.Row(topic="iris", partition=0, offset=41, key=b"", value=b'{"x": 1}')
    with beam.Pipeline(options=_direct()) as pipeline:
        rows = (
            pipeline
            | beam.Create([kafka])
            | beam.ParDo(ParseMessage("kafka", None)).with_outputs(DEAD, main="rows")
        )
        assert_that(rows.rows, equal_to([("iris:0:41", {"x": 1})]))


def test_kafka_source_translation() -> None:
    spec = _spec(source={"kind": "kafka", "url": "kafka://broker:9092", "topic": "iris", "options": {"x": 1}})
    assert kafka_config(spec) == {
        "bootstrap.servers": "broker:9092",
        "group.id": "iris",
        "auto.offset.reset": "earliest",
        "x": "1",
    }
    with pytest.raises(SpecError, match="source kind 'kafka' needs url: \\(bootstrap servers, host:9092\\)"):
        kafka_config(_spec(source={"kind": "kafka", "topic": "iris"}))


def test_bigquery_sink_translation() -> None:
    sink = SinkSpec(kind="bigquery", table="my-project:ml.iris_predictions")
    assert bigquery_args(sink, streaming=False) == {
        "table": "my-project:ml.iris_predictions",
        "schema": "SCHEMA_AUTODETECT",
        "method": "FILE_LOADS",
        "create_disposition": "CREATE_IF_NEEDED",
        "write_disposition": "WRITE_APPEND",
    }
    typed = SinkSpec(kind="bigquery", table="p:d.t", options={"schema": "key:STRING,prediction:INTEGER"})
    assert bigquery_args(typed, streaming=True)["method"] == "STREAMING_INSERTS"
    with pytest.raises(SpecError, match="sink kind 'bigquery' needs table: project:dataset.table"):
        bigquery_args(SinkSpec(kind="bigquery"), streaming=False)
    spec = _spec(sink={"kind": "bigquery", "table": "p:d.t"})
    from inferline.engine.beam_io import dead_letter_sink

    errors = dead_letter_sink(spec)
    assert errors is not None and (errors.kind, errors.table) == ("bigquery", "p:d.t_errors")


@pytest.mark.skipif(
    bool(os.environ.get("INFERLINE_HAVE_GCP")), reason="google-cloud-bigquery is installed here"
)
def test_bigquery_without_the_gcp_extra_names_it() -> None:
    try:
        import google.cloud.bigquery  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("google-cloud-bigquery is installed")
    with pytest.raises(MissingExtraError, match=r"pip install 'inferline\[gcp\]'"):
        build(beam.Pipeline(options=_direct()), _spec(sink={"kind": "bigquery", "table": "p:d.t"}))


def test_notifications_naming_images_are_loaded_and_classified(tmp_path: Path, digits_example: Path) -> None:
    # Pub/Sub messages naming files (bare paths or {"uri": ...}) -> decode -> CNN, as with
    # `load: image` on the local engine; a missing file dead-letters its message only.
    import torch

    from inferline.examples.digits import DigitsCNN
    from inferline.io.images import ImageSettings, decode_image

    pngs = sorted((digits_example / "images").glob("*.png"))[:12]
    missing = tmp_path / "gone.png"
    bodies = [json.dumps(str(p)) if i % 2 else json.dumps({"uri": str(p)}) for i, p in enumerate(pngs)]
    bodies.append(str(missing))  # a bare path, not even JSON
    messages = [PubsubMessage(b.encode(), {}, message_id=f"m{i}") for i, b in enumerate(bodies)]
    image = {"mode": "L", "resize": [28, 28], "scale": 255, "layout": "NCHW"}
    spec = _spec(
        source={"kind": "pubsub", "topic": "projects/p/topics/arrivals", "load": "image", **image},
        model={
            "name": "digits",
            "uri": str(digits_example / "models/digits-*.pt"),
            "model_class": "inferline.examples.digits:DigitsCNN",
            "model_params": {"width": 16},
        },
        batch={"max_size": 5},
    )
    model = DigitsCNN(width=16)
    model.load_state_dict(torch.load(digits_example / "models/digits-1.pt", weights_only=True))
    model.eval()
    settings = ImageSettings(mode="L", resize=(28, 28), scale=255)
    with torch.no_grad():
        pixels = torch.from_numpy(np.stack([decode_image(p.read_bytes(), settings) for p in pngs]))
        expected = [
            (str(p), label) for p, label in zip(pngs, model(pixels).argmax(dim=1).tolist(), strict=True)
        ]
    with beam.Pipeline(options=_direct()) as pipeline:
        parsed = (
            pipeline
            | beam.Create(messages)
            | beam.ParDo(ParseMessage("pubsub", None, load="image")).with_outputs(DEAD, main="rows")
        )
        out = process_rows(parsed.rows, spec)
        got = out.results | beam.Map(lambda r: (r["uri"], r["prediction"]))
        assert_that(got, equal_to(expected), label="results")
        dead = out.dead | beam.Map(lambda d: (d["key"], d["error"], d["stage"]))
        assert_that(dead, equal_to([("m12", f"{missing}: file not found", "load")]), label="dead")


def test_several_watched_models_on_a_stream_are_refused(models: Path) -> None:
    watched = [
        {"name": n, "uri": str(models / "iris-*.joblib"), "inputs": FEATURES, "watch": True} for n in "ab"
    ]
    spec = _spec(model=None, models=watched)
    with pytest.raises(SpecError, match="^p.yaml: --runner beam swaps one watched model"):
        process_rows(
            beam.Pipeline(options=_direct(streaming=True)) | beam.Create([_row(0)]), spec, streaming=True
        )


def test_a_savedmodel_and_a_tflite_model_give_the_local_engines_rows_and_types(tmp_path: Path) -> None:
    # A SavedModel with named inputs (one of them text) and a float32 output, beside a TFLite
    # classifier: under Beam the rows, and the Parquet column types, are the local engine's.
    tf_models = pytest.importorskip("tests.tf_models")
    pytest.importorskip("ai_edge_litert")
    tf_models.save_price_model(tmp_path / "price")
    tf_models.save_dense_classifier(tmp_path / "dense")
    tf_models.save_tflite(tmp_path / "dense", tmp_path / "dense.tflite")
    rng = np.random.default_rng(0)
    flats = {
        "id": list(range(20)),
        "rooms": rng.integers(1, 6, 20).tolist(),
        "area": rng.uniform(20, 200, 20).round(1).tolist(),
        "city": rng.choice(["paris", "lyon"], 20).tolist(),
        "floor": rng.integers(0, 9, 20).tolist(),
    }
    lines = [",".join(flats)] + [",".join(str(v[i]) for v in flats.values()) for i in range(20)]
    (tmp_path / "flats.csv").write_text("\n".join(lines) + "\n")
    models = [
        {"name": "price", "uri": str(tmp_path / "price")},
        {"name": "lite", "uri": str(tmp_path / "dense.tflite"), "inputs": ["rooms", "area", "floor", "id"]},
    ]
    common = {
        "source": {"kind": "csv", "path": str(tmp_path / "flats.csv")},
        "key": "id",
        "batch": {"max_size": 8},
    }
    for engine in ("beam", "local"):
        sink = {"kind": "parquet", "path": str(tmp_path / f"{engine}.parquet")}
        spec = _spec(**common, model=None, models=models, sink=sink)
        summary = run_beam(spec, ["--direct_num_workers=1"]) if engine == "beam" else run_pipeline(spec)
        assert (summary.rows_predicted, summary.rows_dead) == (20, 0)
    want = pq.read_table(tmp_path / "local.parquet").sort_by("key")
    got = pq.read_table(tmp_path / "beam.parquet").sort_by("key")
    assert want.schema.field("price_prediction").type == pa.float32()
    assert got.schema == want.schema
    assert got.to_pylist() == want.to_pylist()
