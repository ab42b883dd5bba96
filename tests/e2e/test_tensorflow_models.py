"""BigQuery ML's image walkthrough with a SavedModel built here: pipeline, SQL, TFLite, server.

The walkthrough decodes an object table's images and resizes them to 224x224 for the
classifier; ML.RESIZE_IMAGE is not in inferline's SQL yet, so SQL resizes with
`decode_image(data, 224, 224)` and the pipeline with its images source's `resize:`.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import httpx
import numpy as np
import pytest

import inferline.sql
from inferline.io.images import ImageSettings, decode_image
from inferline.models.store import ModelStore
from inferline.sql.decode import decode
from tests.conftest import CliRunner
from tests.e2e.server import running_server
from tests.lazy import LazyModule, requires

Image = pytest.importorskip("PIL.Image")
ImageDraw = pytest.importorskip("PIL.ImageDraw")
tf_models = LazyModule("tests.tf_models")  # imports TensorFlow: only when a test runs
pytestmark = requires("tensorflow")

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 230), (240, 240, 40), (200, 40, 200), (20, 20, 20)]


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`resnet/` (a SavedModel image classifier), `classifier.tflite`, and 64x48 PNGs in `png/`."""
    root = tmp_path_factory.mktemp("walkthrough")
    tf_models.save_image_classifier(root / "resnet")
    tf_models.save_tflite(root / "resnet", root / "classifier.tflite")
    (root / "png").mkdir()
    for i, colour in enumerate(COLOURS):
        image = Image.new("RGB", (64, 48), (255, 255, 255))
        ImageDraw.Draw(image).ellipse([4 + 3 * i, 4, 40 + 3 * i, 40], fill=colour)
        image.save(root / "png" / f"shape_{i}.png")
    return root


SPEC = """
name: walkthrough
source: {{kind: images, path: {root}/png/*.png, mode: RGB, resize: [224, 224], scale: 255, layout: NHWC}}
model: {{name: resnet, uri: {root}/resnet}}
sink: {{kind: duckdb, path: out.duckdb, table: labels}}
"""


def test_pipeline_classifies_images_resized_to_224(walkthrough: Path, project: Path, cli: CliRunner) -> None:
    (project / "walkthrough.yaml").write_text(SPEC.format(root=walkthrough))
    result = cli("run", "walkthrough.yaml")
    assert "6 rows read, 6 predicted, 0 dead-lettered" in result.stdout
    pngs = sorted((walkthrough / "png").glob("*.png"))
    with duckdb.connect(str(project / "out.duckdb")) as con:
        rows = dict(con.execute("SELECT key, scores FROM labels").fetchall())
    settings = ImageSettings(mode="RGB", resize=(224, 224), scale=255.0, layout="NHWC")
    pixels = np.stack([decode_image(p.read_bytes(), settings) for p in pngs])
    want = tf_models.signature_outputs(walkthrough / "resnet", image=pixels)["probabilities"]
    np.testing.assert_allclose([rows[str(p)] for p in pngs], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("model_type", "path"), [("TENSORFLOW", "resnet"), ("TENSORFLOW_LITE", "classifier.tflite")]
)
def test_sql_ml_predict_over_an_object_table(walkthrough: Path, model_type: str, path: str) -> None:
    with inferline.sql.connect() as con:
        con.run_script(
            f"CREATE EXTERNAL TABLE ds.images OPTIONS(uris=['{walkthrough}/png/*.png'], "
            "object_metadata='SIMPLE');"
            f"CREATE MODEL ds.resnet OPTIONS(model_type='{model_type}', model_path='{walkthrough}/{path}');"
        )
        rows = con.sql(
            "SELECT uri, predicted_label, probabilities, feature_vector FROM ML.PREDICT(MODEL ds.resnet, "
            "(SELECT uri, decode_image(data, 224, 224) AS image FROM ds.images)) ORDER BY uri"
        ).fetchall()
    pixels = np.stack([decode(Path(uri).read_bytes(), height=224, width=224) for uri, *_ in rows])
    both = tf_models.signature_outputs(walkthrough / "resnet", image=pixels)
    want = both["probabilities"]
    np.testing.assert_allclose([r[2] for r in rows], want, rtol=1e-5, atol=1e-6)
    assert [r[1] for r in rows] == want.argmax(axis=1).tolist()
    # The classifier's other output is a column of its own (issue 18).
    np.testing.assert_allclose([r[3] for r in rows], both["feature_vector"], rtol=1e-5, atol=1e-5)


def test_server_answers_tflite_and_a_savedmodel_registered_with_its_signature(
    walkthrough: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    ModelStore(str(store)).add("shapes", str(walkthrough / "classifier.tflite"))
    images = np.random.default_rng(0).random((3, 8, 8, 3), dtype=np.float32)
    both = tf_models.signature_outputs(walkthrough / "resnet", image=images)
    want = both["probabilities"]
    embedded = tf_models.signature_outputs(walkthrough / "resnet", "embed", image=images)["feature_vector"]
    # A SavedModel's graph may read files: registering one over HTTP needs its folder listed.
    trusted = {"INFERLINE_TRUSTED_PATHS": f"{walkthrough}:{store}"}
    with running_server(store, "--token", "tf", env=trusted, deadline_s=120) as base:
        answer = httpx.post(f"{base}/predictions/shapes", json={"instances": images.tolist()})
        registered = httpx.post(
            f"{base}/models?url={walkthrough / 'resnet'}&model_name=embedder&signature=embed",
            headers={"Authorization": "Bearer tf"},
            timeout=120,
        )
        assert registered.status_code == 200, registered.text
        embedding = httpx.post(f"{base}/predictions/embedder", json={"instances": images.tolist()})
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == want.argmax(axis=1).tolist()
    np.testing.assert_allclose(answer.json()["scores"], want, rtol=1e-5, atol=1e-6)
    # The classifier's other output comes too, under its name (issue 18).
    np.testing.assert_allclose(answer.json()["feature_vector"], both["feature_vector"], rtol=1e-5, atol=1e-5)
    assert embedding.status_code == 200, embedding.text
    assert "scores" not in embedding.json()  # the embed signature's one output, as it is
    np.testing.assert_allclose(embedding.json()["predictions"], embedded, rtol=1e-5, atol=1e-6)
    assert ModelStore(str(store)).current("embedder").metadata == {"signature": "embed"}
