"""A Hugging Face text classifier folder (tiny, random, built here): pipeline, SQL and the server
over strings (JSON strings on /predictions, v2 BYTES tensors from tritonclient and JSON)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import numpy as np
import pytest

import inferline.sql
from inferline.models.store import ModelStore
from tests.conftest import CliRunner
from tests.e2e.server import running_server
from tests.hf_models import save_encoder, save_sentiment
from tests.lazy import LazyModule, requires

transformers = LazyModule("transformers")
httpclient = pytest.importorskip("tritonclient.http")
pytestmark = requires("transformers")

TOKEN = "hf-test-token"
REVIEWS = ["the film was very good", "awful plot", "a great great film", "bad", "the plot was a film"]


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hf-e2e")
    save_sentiment(root / "sentiment")
    save_encoder(root / "encoder")
    return root


def _pipeline_scores(folder: Path) -> list[dict[str, float]]:
    pipe = transformers.pipeline("text-classification", model=str(folder), top_k=None)
    return [{d["label"]: d["score"] for d in answer} for answer in pipe(REVIEWS)]


SPEC = """
name: reviews
source: {{kind: jsonl, path: reviews.jsonl}}
key: id
model: {{name: sentiment, uri: {root}/sentiment, inputs: [review]}}
sink: {{kind: duckdb, path: out.duckdb, table: reviews}}
"""


def test_pipeline_classifies_a_string_column(sentiment: Path, project: Path, cli: CliRunner) -> None:
    lines = [json.dumps({"id": i, "review": text}) for i, text in enumerate(REVIEWS)]
    (project / "reviews.jsonl").write_text("\n".join(lines) + "\n")
    (project / "reviews.yaml").write_text(SPEC.format(root=sentiment))
    result = cli("run", "reviews.yaml")
    assert "5 rows read, 5 predicted, 0 dead-lettered" in result.stdout
    with duckdb.connect(str(project / "out.duckdb")) as con:
        rows = con.execute(
            "SELECT review, prediction, scores FROM reviews ORDER BY CAST(key AS INT)"
        ).fetchall()
    want = _pipeline_scores(sentiment / "sentiment")
    assert [r[0] for r in rows] == REVIEWS
    assert [r[1] for r in rows] == [max(w, key=w.__getitem__) for w in want]
    np.testing.assert_allclose(
        [r[2] for r in rows], [[w["NEGATIVE"], w["POSITIVE"]] for w in want], rtol=1e-5
    )


def test_sql_ml_predict_over_strings(sentiment: Path) -> None:
    with inferline.sql.connect() as con:
        con.run_script(
            "CREATE TABLE reviews AS SELECT * FROM (VALUES "
            + ", ".join(f"({i}, '{t}')" for i, t in enumerate(REVIEWS))
            + ") t(id, review);"
            f"CREATE MODEL ds.sentiment INPUT(review STRING) OPTIONS(model_type='huggingface', "
            f"model_path='{sentiment}/sentiment');"
            f"CREATE MODEL ds.encoder INPUT(review STRING) OUTPUT(embedding ARRAY<FLOAT64>) "
            f"OPTIONS(model_type='huggingface', model_path='{sentiment}/encoder');"
        )
        labels = con.sql(
            "SELECT predicted_label, probabilities "
            "FROM ML.PREDICT(MODEL ds.sentiment, TABLE reviews) ORDER BY id"
        ).fetchall()
        embeddings = con.sql(
            "SELECT embedding FROM ML.PREDICT(MODEL ds.encoder, TABLE reviews) ORDER BY id"
        ).fetchall()
    want = _pipeline_scores(sentiment / "sentiment")
    assert [r[0] for r in labels] == [max(w, key=w.__getitem__) for w in want]
    np.testing.assert_allclose(
        [r[1] for r in labels], [[w["NEGATIVE"], w["POSITIVE"]] for w in want], rtol=1e-5
    )
    extractor = transformers.pipeline("feature-extraction", model=str(sentiment / "encoder"))
    for text, (embedding,) in zip(REVIEWS, embeddings, strict=True):
        np.testing.assert_allclose(
            embedding, np.asarray(extractor(text))[0].mean(axis=0), rtol=1e-4, atol=1e-5
        )


@pytest.fixture(scope="module")
def server(sentiment: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for the module: `sentiment` from the store at start (more are registered)."""
    store = tmp_path_factory.mktemp("hf-serve") / "store"
    ModelStore(str(store)).add("sentiment", str(sentiment / "sentiment"))
    with running_server(store, "--token", TOKEN, deadline_s=120) as base:  # torch + transformers imports
        yield base


def _labels_and_scores(folder: Path) -> tuple[list[str], np.ndarray]:
    want = _pipeline_scores(folder)
    return [max(w, key=w.__getitem__) for w in want], np.array([[w["NEGATIVE"], w["POSITIVE"]] for w in want])


def test_server_classifies_json_strings_on_predictions(server: str, sentiment: Path) -> None:
    labels, scores = _labels_and_scores(sentiment / "sentiment")
    bodies = [
        ({"instances": REVIEWS}, slice(None)),
        (REVIEWS, slice(None)),
        ([{"text": t} for t in REVIEWS], slice(None)),
        ({"text": REVIEWS[1]}, slice(1, 2)),  # one instance, curl -d '{"text": "..."}'
        (REVIEWS[2], slice(2, 3)),  # one JSON string
    ]
    for body, rows in bodies:
        answer = httpx.post(f"{server}/predictions/sentiment", json=body)
        assert answer.status_code == 200, (body, answer.text)
        assert answer.json()["predictions"] == labels[rows]
        np.testing.assert_allclose(answer.json()["scores"], scores[rows], rtol=1e-5)
    plain = httpx.post(
        f"{server}/predictions/sentiment", content=REVIEWS[3], headers={"Content-Type": "text/plain"}
    )
    assert plain.status_code == 200, plain.text
    assert plain.json()["predictions"] == labels[3:4]
    number = httpx.post(f"{server}/predictions/sentiment", json={"instances": ["good", 42]})
    assert number.status_code == 422
    assert "instance 1, field text is 42; expected a string" in number.json()["message"]


def test_v2_bytes_tensors_from_tritonclient_and_json(server: str, sentiment: Path) -> None:
    labels, scores = _labels_and_scores(sentiment / "sentiment")
    client = httpclient.InferenceServerClient(server.removeprefix("http://"))
    metadata = client.get_model_metadata("sentiment")
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    tensor = httpclient.InferInput("text", [len(REVIEWS)], "BYTES")
    tensor.set_data_from_numpy(np.array(REVIEWS, dtype=object))  # binary: 4-byte length + UTF-8 each
    result = client.infer("sentiment", [tensor])
    assert [v.decode() for v in result.as_numpy("predictions")] == labels
    np.testing.assert_allclose(result.as_numpy("scores"), scores, rtol=1e-5)

    for name in ("text", "input"):  # its input's name, or v2's usual one
        body = {"inputs": [{"name": name, "shape": [2, 1], "datatype": "BYTES", "data": REVIEWS[:2]}]}
        answer = httpx.post(f"{server}/v2/models/sentiment/infer", json=body)
        assert answer.status_code == 200, answer.text
        outputs = {o["name"]: o for o in answer.json()["outputs"]}
        assert outputs["predictions"]["data"] == labels[:2]
        np.testing.assert_allclose(np.reshape(outputs["scores"]["data"], (2, 2)), scores[:2], rtol=1e-5)


def test_a_folder_registered_with_a_task(server: str, sentiment: Path) -> None:
    """The classifier's folder registered as `feature-extraction` answers embeddings."""
    auth = {"Authorization": f"Bearer {TOKEN}"}
    url = f"{server}/models?url={sentiment / 'sentiment'}&model_name=embed&task=feature-extraction"
    registered = httpx.post(url, headers=auth, timeout=60)
    assert registered.status_code == 200, registered.text
    extractor = transformers.pipeline("feature-extraction", model=str(sentiment / "sentiment"))
    want = [np.asarray(extractor(text))[0].mean(axis=0) for text in REVIEWS[:2]]
    answer = httpx.post(f"{server}/predictions/embed", json={"instances": REVIEWS[:2]})
    assert answer.status_code == 200, answer.text
    assert "scores" not in answer.json()
    np.testing.assert_allclose(answer.json()["predictions"], want, rtol=1e-4, atol=1e-5)
