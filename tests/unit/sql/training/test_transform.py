"""sql/training/transform.py: a TRANSFORM is fitted once at CREATE MODEL, saved, and applied
again by ML.PREDICT and ML.EVALUATE."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import OneHotEncoder

import inferline.sql
from inferline.errors import SqlError
from inferline.sql import SqlConnection

ROWS = 120


@pytest.fixture(scope="module")
def con(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SqlConnection]:
    store = Path(tmp_path_factory.mktemp("store"))
    connection = inferline.sql.connect(store=str(store))
    rng = np.random.default_rng(3)
    x = rng.normal(5.0, 2.0, ROWS)
    colour = rng.choice(np.array(["red", "blue", "green"]), ROWS)
    y = 2.0 * (x - 5.0) / 2.0 + np.where(colour == "red", 3.0, 0.0) + rng.normal(0, 0.1, ROWS)
    connection.raw.register("generated", pa.table({"x": x, "colour": colour, "y": y, "id": np.arange(ROWS)}))
    connection.raw.execute("CREATE TABLE rows AS SELECT * FROM generated")
    connection.sql(
        "CREATE MODEL ds.scaled TRANSFORM(ML.MIN_MAX_SCALER(x) OVER () AS x_scaled, colour, y) "
        "OPTIONS(model_type='linear_reg', input_label_cols=['y'], data_split_method='NO_SPLIT') "
        "AS SELECT x, colour, y FROM rows"
    )
    try:
        yield connection
    finally:
        connection.close()


def test_predict_applies_the_saved_transform(con: SqlConnection) -> None:
    rows = con.raw.execute("SELECT x, colour, y FROM rows ORDER BY id").fetchnumpy()
    x, colour, y = rows["x"], rows["colour"].astype(object), rows["y"]
    low, high = x.min(), x.max()
    scaled = np.clip((x - low) / (high - low), 0.0, 1.0)
    # BigQuery's automatic preprocessing then standardises the TRANSFORM's numbers.
    standard = (scaled - scaled.mean()) / scaled.std()
    onehot = OneHotEncoder(sparse_output=False).fit(colour.reshape(-1, 1))
    direct = LinearRegression().fit(np.column_stack([standard, onehot.transform(colour.reshape(-1, 1))]), y)

    got = con.sql(
        "SELECT predicted_y, x_scaled, x, id FROM ML.PREDICT(MODEL ds.scaled, "
        "(SELECT x, colour, id FROM rows WHERE id < 10)) ORDER BY id"
    ).fetchall()
    want = direct.predict(np.column_stack([standard[:10], onehot.transform(colour[:10].reshape(-1, 1))]))
    np.testing.assert_allclose([r[0] for r in got], want, rtol=1e-9)
    np.testing.assert_allclose([r[1] for r in got], scaled[:10], rtol=1e-12)
    np.testing.assert_allclose([r[2] for r in got], x[:10])  # the input's columns pass through
    evaluation = con.sql("SELECT r2_score FROM ML.EVALUATE(MODEL ds.scaled)").fetchall()[0][0]
    residuals = y - direct.predict(np.column_stack([standard, onehot.transform(colour.reshape(-1, 1))]))
    assert evaluation == pytest.approx(1 - (residuals**2).sum() / ((y - y.mean()) ** 2).sum())


def test_new_rows_use_the_training_statistics(con: SqlConnection) -> None:
    low, high = con.raw.execute("SELECT min(x), max(x) FROM rows").fetchall()[0]
    quarter = low + (high - low) / 4
    got = con.sql(
        f"SELECT x_scaled FROM ML.PREDICT(MODEL ds.scaled, (SELECT {quarter} AS x, 'red' AS colour))"
    ).fetchall()
    assert got[0][0] == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("transform", "message"),
    [
        ("x * 2, y", r"TRANSFORM output x \* 2 needs a name: ... AS column"),
        (
            "ML.STANDARD_SCALER(x) OVER (PARTITION BY colour) AS s, y",
            r"in TRANSFORM, ML.STANDARD_SCALER takes OVER \(\)",
        ),
        ("* EXCEPT (nothing), y", r"TRANSFORM's \* EXCEPT names no column nothing"),
        ("x, x, y", r"TRANSFORM gives column\(s\) x more than once"),
    ],
)
def test_transform_errors(con: SqlConnection, transform: str, message: str) -> None:
    with pytest.raises(SqlError, match=f"CREATE MODEL ds.bad: {message}"):
        con.sql(
            f"CREATE MODEL ds.bad TRANSFORM({transform}) OPTIONS(model_type='linear_reg', "
            "input_label_cols=['y']) AS SELECT x, colour, y FROM rows"
        )


def test_imported_models_take_no_transform(con: SqlConnection) -> None:
    with pytest.raises(SqlError, match=r"TRANSFORM\(...\) applies to models trained here"):
        con.sql(
            "CREATE MODEL ds.imported TRANSFORM(x AS x) OPTIONS(model_type='sklearn', model_path='m.joblib')"
        )
