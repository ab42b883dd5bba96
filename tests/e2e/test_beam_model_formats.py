"""`inferline run --runner beam` with the formats people ship, side by side in one pipeline:
XGBoost, LightGBM, an ONNX export with one input per column (text too) and a Hugging Face
text classifier. Beam's rows are the local engine's rows. (SavedModel and TFLite under Beam:
tests/unit/engine/test_beam.py, in-process, so TensorFlow is imported once.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from inferline.engine.local import run_pipeline
from inferline.pipeline import load_spec
from tests.conftest import CliRunner
from tests.hf_models import WORDS, save_sentiment
from tests.lazy import LazyModule, requires
from tests.onnx_models import FEATURES, iris_frame, per_column_pipeline

xgb = LazyModule("xgboost")
lgb = LazyModule("lightgbm")
pytestmark = requires("xgboost", "lightgbm", "skl2onnx", "transformers")

SPEC = """
name: formats
source: {{kind: csv, path: {root}/flowers.csv}}
key: id
models:
  - {{name: xgb, uri: {root}/iris.json, inputs: [{features}]}}
  - {{name: lgb, uri: {root}/iris.txt, inputs: [{features}]}}
  - {{name: garden, uri: {root}/garden.onnx}}
  - {{name: review, uri: {root}/sentiment, inputs: [review]}}
sink: {{kind: parquet, path: beam.parquet}}
batch: {{max_size: 64}}
"""


@pytest.fixture(scope="module")
def formats(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """flowers.csv (iris, a `garden` string, a `review` text) and a model of each format."""
    root = tmp_path_factory.mktemp("beam-formats")
    frame = iris_frame()
    frame.insert(0, "id", range(len(frame)))
    rng = np.random.default_rng(0)
    frame["review"] = [" ".join(rng.choice(WORDS, 4)) for _ in range(len(frame))]
    frame.to_csv(root / "flowers.csv", index=False)
    x, y = frame[FEATURES].to_numpy(), frame["species"]
    xgb.train({"objective": "multi:softprob", "num_class": 3}, xgb.DMatrix(x, label=y), 5).save_model(
        str(root / "iris.json")
    )
    params = {"objective": "multiclass", "num_class": 3, "verbose": -1}
    lgb.train(params, lgb.Dataset(x, label=y), 5).save_model(str(root / "iris.txt"))
    per_column_pipeline(root / "garden.onnx", with_text=True)
    save_sentiment(root / "sentiment")
    (root / "formats.yaml").write_text(SPEC.format(root=root, features=", ".join(FEATURES)))
    return root


def test_beam_gives_the_local_engines_rows_for_every_format(
    formats: Path, project: Path, cli: CliRunner
) -> None:
    spec = str(formats / "formats.yaml")
    stdout = cli("run", spec, "--runner", "beam", "--", "--direct_num_workers=1", timeout=600).stdout
    assert "150 rows read, 150 predicted, 0 dead-lettered" in stdout
    assert "model: garden/garden, lgb/iris, review/sentiment, xgb/iris" in stdout
    local = load_spec(spec, overrides=["sink.path=local.parquet"])
    assert run_pipeline(local).rows_dead == 0
    want = pq.read_table("local.parquet").sort_by("key")
    got = pq.read_table("beam.parquet").sort_by("key")
    assert got.schema == want.schema
    assert got.to_pylist() == want.to_pylist()
    assert set(got["review_prediction"].to_pylist()) <= {"NEGATIVE", "POSITIVE"}
    assert {len(s) for s in got["garden_scores"].to_pylist()} == {3}
