"""Images end to end in SQL: an object table of PNGs -> ML.DECODE_IMAGE -> ML.PREDICT."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

import inferline.sql
from inferline.errors import SqlError


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sklearn's 8x8 digits: a model trained on 1,500 of them, 60 others as PNGs `<label>_<i>.png`."""
    root = tmp_path_factory.mktemp("digits")
    digits = load_digits()
    pixels = np.round(digits.images / 16.0 * 255).astype(np.uint8)
    model = LogisticRegression(max_iter=3000).fit(
        pixels[:1500].reshape(1500, -1) / 255.0, digits.target[:1500]
    )
    joblib.dump(model, root / "digits-1.joblib")
    (root / "png").mkdir()
    for i in range(1500, 1560):
        Image.fromarray(pixels[i]).save(root / "png" / f"{digits.target[i]}_{i}.png")
    return root


SETUP = """
CREATE EXTERNAL TABLE ds.images OPTIONS(uris=['{root}/png/*.png'], object_metadata='SIMPLE');
CREATE MODEL ds.digits OPTIONS(model_type='sklearn', model_path='{root}/digits-*.joblib');
CREATE TABLE ds.labels AS SELECT i AS class, 'digit ' || i AS name FROM range(10) t(i);
"""

TOP_CLASSES = r"""
WITH predictions AS (
  SELECT uri, predicted_label, probabilities
  FROM ML.PREDICT(MODEL ds.digits, (SELECT uri, ML.DECODE_IMAGE(data) AS image FROM ds.images))
),
ranked AS (
  SELECT uri, class, probability,
         ROW_NUMBER() OVER (PARTITION BY uri ORDER BY probability DESC) AS rank
  FROM predictions, UNNEST(probabilities) AS probability WITH OFFSET AS class
)
SELECT REGEXP_EXTRACT(r.uri, r'[^/]+$') AS file, r.rank, r.class, l.name, r.probability
FROM ranked AS r JOIN ds.labels AS l ON l.class = r.class
WHERE r.rank <= 2
ORDER BY file, r.rank
"""


def test_top_classes_per_image_joined_to_labels(digits_folder: Path) -> None:
    with inferline.sql.connect() as con:
        con.run_script(SETUP.format(root=digits_folder))
        table = con.fetch(con.run_script(TOP_CLASSES))
    assert table is not None
    rows = table.to_pylist()
    assert len(rows) == 120
    best = [r for r in rows if r["rank"] == 1]
    truth = [int(r["file"].split("_")[0]) for r in best]
    accuracy = np.mean([r["class"] == t for r, t in zip(best, truth, strict=True)])
    assert accuracy > 0.85
    assert all(r["name"] == f"digit {r['class']}" for r in rows)
    assert all(0.0 <= r["probability"] <= 1.0 for r in rows)


def test_predict_on_decoded_images_equals_the_model_on_the_pixels(digits_folder: Path) -> None:
    model = joblib.load(digits_folder / "digits-1.joblib")
    with inferline.sql.connect() as con:
        con.run_script(SETUP.format(root=digits_folder))
        relation = con.raw.sql(
            "SELECT uri, predict('ds.digits', decode_image(data)) AS p FROM ds.images ORDER BY uri"
        )
        rows = relation.fetchall()
    pixels = np.stack([np.asarray(Image.open(uri), dtype=np.float64).reshape(-1) / 255.0 for uri, _ in rows])
    np.testing.assert_array_equal([p for _, p in rows], model.predict(pixels).astype(np.float64))


def test_images_of_different_sizes_in_one_chunk_say_how_to_resize(
    digits_folder: Path, tmp_path: Path
) -> None:
    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    Image.new("L", (9, 8)).save(tmp_path / "b.png")
    with inferline.sql.connect() as con:
        con.run_script(SETUP.format(root=digits_folder).replace(f"{digits_folder}/png", str(tmp_path)))
        con.sql("CREATE TABLE blobs AS SELECT data FROM ds.images")  # one chunk, two sizes
        query = "SELECT predict('ds.digits', decode_image(data)) FROM blobs"
        with pytest.raises(
            SqlError, match=r"input arrays differ in size .* decode_image\(data, height, width\)"
        ):
            con.fetch(con.run_script(query))
        resized = con.fetch(con.run_script(query.replace("decode_image(data)", "decode_image(data, 8, 8)")))
    assert resized is not None and resized.num_rows == 2


def test_unnest_with_offset_counts_from_zero_as_in_bigquery(digits_folder: Path) -> None:
    with inferline.sql.connect() as con:
        con.run_script(SETUP.format(root=digits_folder))
        table = con.fetch(
            con.run_script(
                "SELECT i, p FROM ML.PREDICT(MODEL ds.digits, (SELECT ML.DECODE_IMAGE(data) AS image "
                "FROM ds.images LIMIT 1)), UNNEST(probabilities) AS p WITH OFFSET AS i ORDER BY i"
            )
        )
    assert table is not None and table.column("i").to_pylist() == list(range(10))


def test_model_params_must_be_json(digits_folder: Path) -> None:
    with inferline.sql.connect() as con:
        with pytest.raises(
            SqlError, match=r"statement 1: CREATE MODEL ds.m: model_params must be a JSON object"
        ):
            con.sql(
                "CREATE MODEL ds.m OPTIONS(model_type='pytorch', model_path='m.pt', model_params='{width')"
            )
