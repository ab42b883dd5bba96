"""The Dataflow RunInference MNIST model (flattens with `x.view`) through every path.

Its `view` fails when a batch reaches torch with channels-last strides; SQL's NHWC -> NCHW
transpose of 1-channel images used to produce exactly that. Pipeline, SQL and server must
all answer what the model answers on the same pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import httpx
import numpy as np
import pytest

import inferline.sql
from inferline.models.store import ModelStore
from tests.conftest import CliRunner
from tests.e2e.server import running_server
from tests.lazy import LazyModule

if TYPE_CHECKING:
    from tests.mnist import MnistNet

mnist_net = LazyModule("tests.mnist")  # imports torch: only when a test runs

REPO = Path(__file__).resolve().parents[2]
MODEL_CLASS = "tests.mnist:MnistNet"


@pytest.fixture(scope="module")
def mnist(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, MnistNet, list[Path]]:
    root = tmp_path_factory.mktemp("mnist")
    model = mnist_net.save_models(root)
    return root, model, mnist_net.draw_digits(root / "png", 24)


def _softmax(values: np.ndarray) -> np.ndarray:
    exp = np.exp(values - values.max(axis=1, keepdims=True))
    out: np.ndarray = exp / exp.sum(axis=1, keepdims=True)
    return out


SPEC = """
name: mnist
source: {{kind: images, path: {root}/png/*.png, mode: L, resize: [28, 28], scale: 255, layout: NCHW}}
models:
  - {{name: script, uri: {root}/mnist-1.pts}}
  - {{name: weights, uri: {root}/mnist-1.pt, model_class: '{model_class}', output: classes}}
sink: {{kind: duckdb, path: out.duckdb, table: mnist}}
batch: {{max_size: 16}}
"""


def test_pipeline_answers_what_the_model_does(
    mnist: tuple[Path, MnistNet, list[Path]], project: Path, cli: CliRunner
) -> None:
    root, model, pngs = mnist
    (project / "mnist.yaml").write_text(SPEC.format(root=root, model_class=MODEL_CLASS))
    result = cli("run", "mnist.yaml", env={"PYTHONPATH": str(REPO)})
    assert "24 rows read, 24 predicted, 0 dead-lettered" in result.stdout
    with duckdb.connect(str(project / "out.duckdb")) as con:
        rows = {
            k: (a, b)
            for k, a, b in con.execute("SELECT key, script_prediction, weights_scores FROM mnist").fetchall()
        }
    want = mnist_net.logits(model, mnist_net.pixels(pngs))
    # Its last layer is a Linear: the TorchScript model's 10 logits come back as they are; the
    # state_dict one is declared `output: classes` and gives probabilities.
    script = np.array([rows[str(p)][0] for p in pngs])
    np.testing.assert_allclose(script, want, atol=1e-5)
    weights = np.array([rows[str(p)][1] for p in pngs])
    np.testing.assert_allclose(weights, _softmax(want), atol=1e-5)


@pytest.mark.parametrize("suffix", ["pts", "pt"])
def test_sql_ml_predict_over_an_object_table_of_pngs(
    mnist: tuple[Path, MnistNet, list[Path]], suffix: str
) -> None:
    root, model, pngs = mnist
    options = f"model_type='pytorch', model_path='{root}/mnist-*.{suffix}'"
    if suffix == "pt":
        options += f", model_class='{MODEL_CLASS}'"
    with inferline.sql.connect() as con:
        con.run_script(
            f"CREATE EXTERNAL TABLE ds.digits OPTIONS(uris=['{root}/png/*.png'], object_metadata='SIMPLE');"
            # A label and an array declare a classifier (the model's last layer is not a softmax).
            "CREATE MODEL ds.mnist OUTPUT(predicted_label INT64, probabilities ARRAY<FLOAT64>) "
            f"OPTIONS({options});"
        )
        table = con.fetch(
            con.run_script(
                "SELECT uri, predicted_label, probabilities FROM ML.PREDICT(MODEL ds.mnist, "
                "(SELECT uri, ML.DECODE_IMAGE(data) AS image FROM ds.digits)) ORDER BY uri"
            )
        )
    assert table is not None
    rows = table.to_pylist()
    assert [r["uri"] for r in rows] == [str(p) for p in sorted(pngs)]
    out = mnist_net.logits(model, mnist_net.pixels(sorted(pngs)))
    np.testing.assert_allclose(np.array([r["probabilities"] for r in rows]), _softmax(out), atol=1e-5)
    assert [r["predicted_label"] for r in rows] == out.argmax(axis=1).tolist()


def test_sql_output_clause_with_one_array_gives_the_raw_output(
    mnist: tuple[Path, MnistNet, list[Path]],
) -> None:
    root, model, pngs = mnist
    with inferline.sql.connect() as con:
        con.run_script(
            f"CREATE EXTERNAL TABLE ds.digits OPTIONS(uris=['{root}/png/*.png'], object_metadata='SIMPLE');"
            "CREATE MODEL ds.mnist OUTPUT(feature_vector ARRAY<FLOAT64>) "
            f"OPTIONS(model_type='pytorch', model_path='{root}/mnist-*.pts');"
        )
        rows = con.sql(
            "SELECT * FROM ML.PREDICT(MODEL ds.mnist, "
            "(SELECT uri, ML.DECODE_IMAGE(data) AS image FROM ds.digits)) ORDER BY uri"
        ).to_arrow_table()
    assert rows.column_names[0] == "feature_vector" and "probabilities" not in rows.column_names
    want = mnist_net.logits(model, mnist_net.pixels(sorted(pngs)))  # all 10 values per image, not an argmax
    np.testing.assert_allclose(rows.column("feature_vector").to_pylist(), want, atol=1e-5)


def test_server_answers_png_bodies(mnist: tuple[Path, MnistNet, list[Path]], tmp_path: Path) -> None:
    root, model, pngs = mnist
    store = tmp_path / "store"
    image = {"image": {"resize": [28, 28], "mode": "L", "scale": 255}}
    ModelStore(str(store)).add("mnist", str(root / "mnist-1.pts"), metadata={**image, "output": "classes"})
    ModelStore(str(store)).add(
        "mnist_weights", str(root / "mnist-1.pt"), metadata={**image, "model_class": MODEL_CLASS}
    )
    want = mnist_net.logits(model, mnist_net.pixels(pngs[:4]))
    with running_server(store, env={"PYTHONPATH": str(REPO)}) as base:
        answers = {
            name: [
                httpx.post(
                    f"{base}/predictions/{name}",
                    content=p.read_bytes(),
                    headers={"content-type": "image/png"},
                )
                for p in pngs[:4]
            ]
            for name in ("mnist", "mnist_weights")
        }
    assert all(a.status_code == 200 for a in answers["mnist"] + answers["mnist_weights"])
    # `output: classes` in the store metadata: the digit; without it, the 10 logits as they are.
    assert [a.json()["predictions"][0] for a in answers["mnist"]] == want.argmax(axis=1).tolist()
    got = np.array([a.json()["predictions"][0] for a in answers["mnist_weights"]])
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert "scores" not in answers["mnist_weights"][0].json()
