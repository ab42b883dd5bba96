"""A Hugging Face text classifier folder (tiny, random, built here): pipeline and SQL over strings."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import pytest

import inferline.sql
from tests.conftest import CliRunner

transformers = pytest.importorskip("transformers")
from tests.hf_models import save_encoder, save_sentiment  # noqa: E402

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
