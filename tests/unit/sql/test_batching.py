"""ML.PREDICT over an object table calls the model once per chunk of images, not once per image.

The model is a real scikit-learn pipeline whose first step records the size of every batch it
sees, so the test counts the calls the model actually receives.
"""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

import inferline.sql
from inferline.sql import SqlConnection, batching, bigquery

IMAGES = 2100  # more than one DuckDB chunk (2,048 rows)
CHUNK = 2048
BATCHES: list[int] = []


def record_batch(x: np.ndarray) -> np.ndarray:
    """The pipeline's first step: remembers each batch's size (scikit-learn calls it per predict)."""
    BATCHES.append(len(x))
    return x


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2,100 8x8 digit PNGs `<label>_<i>.png` (drawn with Pillow) and a recording model."""
    root = tmp_path_factory.mktemp("batching")
    digits = load_digits()
    pixels = np.round(digits.images / 16.0 * 255).astype(np.uint8)
    model = make_pipeline(FunctionTransformer(record_batch), LogisticRegression(max_iter=3000)).fit(
        pixels[:1000].reshape(1000, -1) / 255.0, digits.target[:1000]
    )
    joblib.dump(model, root / "digits-1.joblib")
    (root / "png").mkdir()
    for i in range(IMAGES):
        j = i % len(pixels)
        Image.fromarray(pixels[j]).save(root / "png" / f"{digits.target[j]}_{i:04d}.png")
    (root / "png" / "notes.txt").write_text("not an image")
    return root


@pytest.fixture
def con(folder: Path) -> SqlConnection:
    connection = inferline.sql.connect()
    connection.run_script(
        f"CREATE EXTERNAL TABLE ds.images OPTIONS(uris=['{folder}/png/*'], object_metadata='SIMPLE');"
        f"CREATE MODEL ds.digits OPTIONS(model_type='sklearn', model_path='{folder}/digits-*.joblib')"
    )
    return connection


PNGS = "FROM ds.images WHERE content_type = 'image/png'"
PREDICT = f"""
SELECT uri, predicted_label, probabilities
FROM ML.PREDICT(MODEL ds.digits, (SELECT uri, ML.DECODE_IMAGE(data) AS image {PNGS}))
"""


def _run(con: SqlConnection, query: str) -> tuple[list[dict[str, object]], list[int]]:
    """The query's rows by uri and the batch sizes the model saw while they were computed."""
    result = con.run_script(query)  # translating probes the model on a few rows
    BATCHES.clear()
    table = con.fetch(result)
    assert table is not None
    return sorted(table.to_pylist(), key=lambda r: str(r["uri"])), list(BATCHES)


def _run_raw(con: SqlConnection, query: str) -> tuple[list[dict[str, object]], list[int]]:
    """As `_run`, on the bare DuckDB connection: native SQL exactly as written."""
    BATCHES.clear()
    table = con.raw.sql(query).to_arrow_table()
    return sorted(table.to_pylist(), key=lambda r: str(r["uri"])), list(BATCHES)


def _chunks(n: int) -> list[int]:
    """predict + predict_proba (two pipeline calls) per DuckDB chunk of `n` rows."""
    sizes = [CHUNK] * (n // CHUNK) + ([n % CHUNK] if n % CHUNK else [])
    return sorted(sizes * 2)


def test_ml_predict_over_an_object_table_calls_the_model_once_per_chunk(con: SqlConnection) -> None:
    rows, batches = _run(con, PREDICT)
    assert len(rows) == IMAGES
    assert sorted(batches) == _chunks(IMAGES)


def test_an_object_table_read_in_a_cte_or_under_an_alias_is_batched_too(con: SqlConnection) -> None:
    rows, batches = _run(
        con,
        "WITH pngs AS (SELECT i.uri, ML.DECODE_IMAGE(i.data) AS image FROM ds.images AS i "
        "WHERE i.content_type = 'image/png') "
        "SELECT uri, predicted_label FROM ML.PREDICT(MODEL ds.digits, TABLE pngs)",
    )
    assert len(rows) == IMAGES and sorted(batches) == _chunks(IMAGES)
    rows, batches = _run(
        con,
        "SELECT uri, predicted_label FROM ML.PREDICT(MODEL ds.digits, (SELECT images.uri, "
        "ML.DECODE_IMAGE(images.data) AS image FROM ds.images JOIN (SELECT 'image/png' AS t) "
        "ON images.content_type = t))",
    )
    assert len(rows) == IMAGES and sorted(batches) == _chunks(IMAGES)


def test_a_select_with_its_own_limit_reads_the_object_table_as_it_is(con: SqlConnection) -> None:
    query = (
        "SELECT uri, predicted_label FROM ML.PREDICT(MODEL ds.digits, "
        f"(SELECT uri, ML.DECODE_IMAGE(data) AS image {PNGS} LIMIT 5))"
    )
    rows, batches = _run(con, query)
    assert len(rows) == 5 and sum(batches) == 10
    (translated,) = bigquery.translate(query, con)
    assert "ORDER BY uri" not in translated


def test_only_object_tables_read_by_the_statement_are_sorted(con: SqlConnection) -> None:
    con.raw.execute("CREATE TABLE ds.plain AS SELECT 'x' AS uri")
    (translated,) = bigquery.translate(
        "CREATE TABLE ds.out AS SELECT * FROM ML.PREDICT(MODEL ds.digits, "
        f"(SELECT uri, ML.DECODE_IMAGE(data) AS image {PNGS} AND uri NOT IN (SELECT uri FROM ds.plain)))",
        con,
    )
    assert translated.count("ORDER BY uri") == 1
    assert "(SELECT * FROM ds.images ORDER BY uri) AS images" in translated
    # A CTE of the same name shadows the object table.
    (translated,) = bigquery.translate(
        "WITH images AS (SELECT * FROM ds.images) SELECT * FROM ML.PREDICT(MODEL ds.digits, "
        "(SELECT uri, ML.DECODE_IMAGE(data) AS image FROM images WHERE content_type = 'image/png'))",
        con,
    )
    assert translated.count("ORDER BY uri") == 1
    assert "WITH images AS (SELECT * FROM (SELECT * FROM ds.images ORDER BY uri) AS images)" in translated


PLAIN = (
    "SELECT uri, predict('ds.digits', decode_image(data)) AS predicted_label, "
    "predict_scores('ds.digits', decode_image(data)) AS probabilities"
)


# The per-image path costs four model calls per image: it runs on one image in ten (210).
SAMPLE = "AND uri LIKE '%0.png'"


def _same(a: list[dict[str, object]], b: list[dict[str, object]]) -> None:
    """All of `a`'s rows, agreeing with the per-image rows `b` (the SAMPLE) on theirs."""
    assert len(a) == IMAGES
    sample = {r["uri"] for r in b}
    a = [r for r in a if r["uri"] in sample]
    assert [r["uri"] for r in a] == [r["uri"] for r in b]
    assert [r["predicted_label"] for r in a] == [r["predicted_label"] for r in b]
    np.testing.assert_allclose([r["probabilities"] for r in a], [r["probabilities"] for r in b], rtol=1e-12)


@pytest.fixture(scope="module")
def per_image(folder: Path) -> list[dict[str, object]]:
    """predict()/predict_scores() on the SAMPLE of PNGs, one image per model call (the bare connection)."""
    connection = inferline.sql.connect()
    connection.run_script(
        f"CREATE EXTERNAL TABLE ds.images OPTIONS(uris=['{folder}/png/*'], object_metadata='SIMPLE');"
        f"CREATE MODEL ds.digits OPTIONS(model_type='sklearn', model_path='{folder}/digits-*.joblib')"
    )
    rows, batches = _run_raw(connection, f"{PLAIN} {PNGS} {SAMPLE}")
    connection.close()
    assert len(rows) == IMAGES // 10 and batches == [1] * (4 * len(rows))
    return rows


def test_batched_results_equal_the_per_image_path_and_the_model(
    con: SqlConnection, folder: Path, per_image: list[dict[str, object]]
) -> None:
    batched, _ = _run(con, PREDICT)
    # `per_image`: predict() on (a sample of) the object table as it is, one image per model call.
    _same(batched, per_image)
    model = joblib.load(folder / "digits-1.joblib")
    pixels = np.stack([np.asarray(Image.open(str(r["uri"])), dtype=np.float64).reshape(-1) for r in batched])
    assert [r["predicted_label"] for r in batched] == model.predict(pixels / 255.0).tolist()
    truth = [int(Path(str(r["uri"])).name.split("_")[0]) for r in batched]
    accuracy = np.mean([r["predicted_label"] == t for r, t in zip(batched, truth, strict=True)])
    assert accuracy > 0.85


def test_predict_over_an_object_table_in_native_sql_calls_the_model_once_per_chunk(
    con: SqlConnection, per_image: list[dict[str, object]]
) -> None:
    rows, batches = _run(con, f"{PLAIN} {PNGS}")
    # Two functions, each predict + predict_proba, per 2,048-image chunk.
    assert sorted(batches) == sorted(_chunks(IMAGES) * 2)
    _same(rows, per_image)
    # The DB-API path too, with a parameter.
    BATCHES.clear()
    fetched = con.execute(
        "SELECT i.uri, predict('ds.digits', decode_image(i.data)) FROM ds.images AS i WHERE content_type = ?",
        ["image/png"],
    ).fetchall()
    assert sorted(BATCHES) == _chunks(IMAGES)
    sample = {r["uri"] for r in per_image}
    assert len(fetched) == IMAGES
    assert sorted(f for f in fetched if f[0] in sample) == [
        (r["uri"], r["predicted_label"]) for r in per_image
    ]


def test_views_over_an_object_table_are_read_in_full_chunks(
    con: SqlConnection, per_image: list[dict[str, object]]
) -> None:
    con.run_script(
        "CREATE VIEW ds.pngs AS SELECT * FROM ds.images WHERE content_type = 'image/png';"
        "CREATE SCHEMA shelf; CREATE VIEW shelf.named AS SELECT uri, data FROM ds.pngs"
    )
    for view in ("ds.pngs", "shelf.named"):
        rows, batches = _run(con, f"{PLAIN} FROM {view}")
        assert sorted(batches) == sorted(_chunks(IMAGES) * 2), view
        _same(rows, per_image)
        rows, batches = _run(
            con,
            "SELECT uri, predicted_label, probabilities FROM ML.PREDICT(MODEL ds.digits, "
            f"(SELECT uri, ML.DECODE_IMAGE(data) AS image FROM {view}))",
        )
        assert sorted(batches) == _chunks(IMAGES), view
        _same(rows, per_image)
    # A view that calls predict(), created through inferline, keeps reading in full chunks later.
    con.run_script(f"CREATE VIEW ds.labelled AS {PLAIN} {PNGS}")
    rows, batches = _run_raw(con, "SELECT * FROM ds.labelled")
    assert sorted(batches) == sorted(_chunks(IMAGES) * 2)
    _same(rows, per_image)


def test_native_sql_is_rewritten_only_where_object_table_rows_feed_the_result(con: SqlConnection) -> None:
    con.run_script(
        "CREATE VIEW ds.paths AS SELECT uri AS path, data FROM ds.images;"  # no uri: not sortable
        "CREATE TABLE ds.flowers AS SELECT 1.0 AS a, 2.0 AS b"
    )

    def rewrite(query: str) -> str:
        return batching.batch_predict_scans(query, con.raw)

    sorted_scan = "(SELECT * FROM ds.images ORDER BY uri)"
    assert (
        rewrite(f"{PLAIN} {PNGS}") == f"{PLAIN} FROM {sorted_scan} AS images WHERE content_type = 'image/png'"
    )
    assert rewrite('SELECT predict_label(\'ds.digits\', decode_image(i.data)) FROM "ds"."images" i') == (
        'SELECT predict_label(\'ds.digits\', decode_image(i.data)) FROM (SELECT * FROM "ds"."images" '
        "ORDER BY uri) i"
    )
    unchanged = [
        f"{PLAIN} {PNGS} LIMIT 5",  # sorting would read every file for 5 rows
        f"SELECT * FROM ({PLAIN} {PNGS}) LIMIT 5",
        "SELECT predict('ds.iris', a, b, a, b) FROM ds.flowers WHERE EXISTS (SELECT 1 FROM ds.images) "
        "AND a IN (SELECT size FROM ds.images)",
        "SELECT predict('ds.digits', decode_image(ds.images.data)) FROM ds.images",  # alias would break
        "SELECT 'predict(', decode_image(data) FROM ds.images -- predict(",  # no call
        "SELECT decode_image(data) FROM ds.images",
        "SELECT predict('ds.digits', decode_image(data)) FROM ds.paths",
        "WITH images AS (SELECT 1.0 AS a) SELECT predict('ds.iris', a) FROM images",  # a CTE shadows it
        "SELECT predict('ds.digits', decode_image(data)) FROM ds.images WHERE (",  # does not parse
    ]
    for query in unchanged:
        assert rewrite(query) == query
    # DuckDB-only syntax around the reference is kept as written.
    query = (
        "FROM ds.images SELECT uri, predict_scores('ds.digits', decode_image(data)) AS s, "
        "list_transform([1, 2], lambda x: x + 1) AS l, {'k': 1} AS t WHERE content_type = 'image/png'"
    )
    assert rewrite(query) == query.replace("FROM ds.images", f"FROM {sorted_scan} AS images")
    table = con.fetch(con.run_script(query))
    assert table is not None and table.num_rows == IMAGES and table.column("l")[0].as_py() == [2, 3]
