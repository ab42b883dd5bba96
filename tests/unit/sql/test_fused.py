"""ML.PREDICT over `ML.DECODE_IMAGE(data) AS image`: decoded inside the model's UDF, same results."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import inferline.sql
from inferline.errors import SqlError
from inferline.sql import SqlConnection, bigquery, fused
from tests.lazy import LazyModule

digits = LazyModule("inferline.examples.digits")  # imports torch: only when a test runs

PREDICT = "SELECT * FROM ML.PREDICT(MODEL ds.digits, ({inner})) ORDER BY uri"


@pytest.fixture
def con(digits_example: Path) -> Iterator[SqlConnection]:
    """`ds.digits` (the example's TorchScript CNN) and an empty `blobs (uri, data)` table."""
    with inferline.sql.connect() as connection:
        connection.sql(
            f"CREATE MODEL ds.digits OPTIONS(model_type='pytorch', "
            f"model_path='{digits_example / 'models' / 'digits-1.pts'}');"
            "CREATE TABLE blobs (uri VARCHAR, data BLOB)"
        )
        yield connection


def _insert(con: SqlConnection, rows: list[tuple[str, bytes | None]]) -> None:
    con.raw.executemany("INSERT INTO blobs VALUES (?, ?)", rows)


def _pngs(tmp_path: Path, count: int, side: int | None = None) -> list[tuple[str, bytes | None]]:
    side = side or digits.SIZE
    files = digits.write_pngs(str(tmp_path / f"png{side}"), count, side)
    return [(Path(f).name, Path(f).read_bytes()) for f in files]


def _rows(con: SqlConnection, query: str) -> tuple[list[str], list[tuple[object, ...]]]:
    relation = con.sql(query)
    assert relation is not None
    return list(relation.columns), relation.fetchall()


def _same(fused: list[tuple[object, ...]], unfused: list[tuple[object, ...]]) -> None:
    assert len(fused) == len(unfused)
    for got, expected in zip(fused, unfused, strict=True):
        label, scores, uri, image = got
        assert (label, uri, image) == (expected[0], expected[2], expected[3])
        assert (scores is None) == (expected[1] is None)
        if scores is not None:
            np.testing.assert_allclose(scores, expected[1], rtol=1e-5, atol=1e-7)  # type: ignore[arg-type]


def _reference(con: SqlConnection, image: str) -> tuple[list[str], list[tuple[object, ...]]]:
    """The same rows decoded into a table first: ML.PREDICT then gets the images themselves."""
    con.sql(f"CREATE OR REPLACE TABLE decoded AS SELECT uri, {image} AS image FROM blobs")
    return _rows(con, PREDICT.format(inner="SELECT * FROM decoded"))


def test_decoded_in_the_udf_equals_decoding_first_with_nulls(con: SqlConnection, tmp_path: Path) -> None:
    _insert(con, [*_pngs(tmp_path, 300), ("empty_a", None), ("empty_b", None)])
    inner = "SELECT uri, ML.DECODE_IMAGE(data) AS image FROM blobs"
    (translated,) = bigquery.translate(PREDICT.format(inner=inner), con)
    assert "__inferline_blob" in translated and "decode_image(" not in translated.lower()
    columns, fused = _rows(con, PREDICT.format(inner=inner))
    expected_columns, unfused = _reference(con, "decode_image(data)")
    assert columns == expected_columns == ["predicted_label", "probabilities", "uri", "image"]
    _same(fused, unfused)
    assert [r[:2] + r[3:] for r in fused if str(r[2]).startswith("empty")] == [(None, None, None)] * 2


def test_resized_and_large_images_equal_decoding_first(con: SqlConnection, tmp_path: Path) -> None:
    # 40x40 is tiny (decoded while the model runs); 80x80 is decoded on all cores by decode_image.
    for side in (40, 80):
        con.sql("DELETE FROM blobs")
        _insert(con, _pngs(tmp_path, 40, side))
        inner = "SELECT uri, decode_image(data, 28, 28) AS image FROM blobs"
        assert "__inferline_blob" in bigquery.translate(PREDICT.format(inner=inner), con)[0]
        _same(_rows(con, PREDICT.format(inner=inner))[1], _reference(con, "decode_image(data, 28, 28)")[1])


def test_errors_are_those_of_decode_image_and_the_model(con: SqlConnection, tmp_path: Path) -> None:
    pngs = _pngs(tmp_path, 200)  # two slices of 167 rows: decoding overlaps the model
    _insert(con, [*pngs[:12], ("bad", b"not an image at all"), *pngs[12:]])  # after the probe's 8 rows
    query = PREDICT.format(inner="SELECT uri, ML.DECODE_IMAGE(data) AS image FROM blobs")
    with pytest.raises(SqlError, match=r"^statement 1: decode_image: row 12 is not an image \(19 bytes"):
        con.fetch(con.run_script(query))
    con.sql("DELETE FROM blobs WHERE uri = 'bad'")
    _insert(con, [("z_larger", _pngs(tmp_path, 1, side=30)[0][1])])  # in the second slice
    with pytest.raises(SqlError, match=r"input arrays differ in size \(28, 30\).*decode_image\(data, height"):
        con.fetch(con.run_script(query))
    con.sql("DELETE FROM blobs WHERE uri >= '1'")  # keeps the zeros: one slice, one model call
    (kept,) = con.raw.execute("SELECT count(*) FROM blobs").fetchall()[0]
    assert 8 < kept < 100
    _insert(con, [("bad", b"\x89PNG not quite")])
    with pytest.raises(SqlError, match=rf"^statement 1: decode_image: row {kept} is not an image \(14 bytes"):
        con.fetch(con.run_script(query))


def test_an_image_alias_used_elsewhere_in_the_subquery_stays_a_decode_image_column(
    con: SqlConnection, tmp_path: Path
) -> None:
    _insert(con, _pngs(tmp_path, 30))
    inner = "SELECT uri, ML.DECODE_IMAGE(data) AS image FROM blobs WHERE image IS NOT NULL"
    (translated,) = bigquery.translate(PREDICT.format(inner=inner), con)
    assert "__inferline_blob" not in translated
    _same(_rows(con, PREDICT.format(inner=inner))[1], _reference(con, "decode_image(data)")[1])


def test_a_threshold_and_ml_evaluate_work_on_the_decoded_path(con: SqlConnection, tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)
    binary = tmp_path / "zero-1.pts"
    digits.save_torchscript(digits.DigitsCNN(classes=2).eval(), str(binary))
    con.sql(f"CREATE MODEL ds.zero OPTIONS(model_type='pytorch', model_path='{binary}')")
    _insert(con, _pngs(tmp_path, 200))
    inner = "SELECT uri, ML.DECODE_IMAGE(data) AS image FROM blobs"
    query = f"SELECT * FROM ML.PREDICT(MODEL ds.zero, ({inner}), STRUCT(0.5 AS threshold)) ORDER BY uri"
    assert "__inferline_blob" in bigquery.translate(query, con)[0]
    con.sql("CREATE OR REPLACE TABLE decoded AS SELECT uri, decode_image(data) AS image FROM blobs")
    reference = query.replace(f"({inner})", "TABLE decoded")
    for threshold in ("0.5", "0.001"):
        _same(
            _rows(con, query.replace("0.5", threshold))[1], _rows(con, reference.replace("0.5", threshold))[1]
        )
    truth = "(starts_with(uri, '0_'))::INT AS label"
    evaluate = "SELECT * FROM ML.EVALUATE(MODEL ds.zero, ({}))"
    columns, (row,) = _rows(
        con, evaluate.format(f"SELECT uri, ML.DECODE_IMAGE(data) AS image, {truth} FROM blobs")
    )
    con.sql(
        f"CREATE OR REPLACE TABLE labelled AS SELECT uri, decode_image(data) AS image, {truth} FROM blobs"
    )
    expected_columns, (expected,) = _rows(con, evaluate.format("SELECT * FROM labelled"))
    assert columns == expected_columns and "log_loss" in columns
    assert row == pytest.approx(expected, rel=1e-6)  # scores from other slices/threads: last bits differ


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT uri, predict('ds.digits', decode_image(data)) FROM ds.images",
            "SELECT uri, __inferline_predict_decoding('ds.digits', data, 0, 0) FROM ds.images",
        ),
        (
            "SELECT Predict_Scores(m, DECODE_IMAGE(i.data, 28, 28)) s, predict_label('m',decode_image(data)) "
            "FROM t -- predict('m', decode_image(x))",
            "SELECT __inferline_predict_scores_decoding(m, i.data, 28, 28) s, "
            "__inferline_predict_label_decoding('m', data, 0, 0) FROM t -- predict('m', decode_image(x))",
        ),
        (
            "SELECT predict(concat('a', 'b'), decode_image(coalesce(data, NULL)))",
            "SELECT __inferline_predict_decoding(concat('a', 'b'), coalesce(data, NULL), 0, 0)",
        ),
    ],
)
def test_native_calls_on_decode_image_become_one_call(sql: str, expected: str) -> None:
    assert fused.fuse_native_calls(sql) == expected


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT predict('m', decode_image(data), 1)",
        "SELECT predict('m', decode_image(data) + 1)",
        "SELECT predict('m', decode_image(data, 28))",
        "SELECT predict(decode_image(data))",
        "SELECT x.predict('m', decode_image(data))",
        "SELECT 'predict(''m'', decode_image(data))'",
        "SELECT predict('m', decode_image(data)",
    ],
)
def test_other_calls_stay_as_written(sql: str) -> None:
    assert fused.fuse_native_calls(sql) == sql


NATIVE = (
    "SELECT uri, predict('ds.digits', decode_image(data{size})) AS p, "
    "predict_scores('ds.digits', decode_image(data{size})) AS s, "
    "predict_label('ds.digits', decode_image(data{size})) AS l FROM blobs ORDER BY uri"
)


def test_native_decoding_calls_equal_decode_then_predict(
    con: SqlConnection, tmp_path: Path, digits_example: Path
) -> None:
    # con.sql rewrites predict(m, decode_image(...)); con.raw runs the statement as written.
    _insert(con, [*_pngs(tmp_path, 300), ("empty", None)])
    for size in ("", ", 28, 28"):
        got, expected = (
            _rows(con, NATIVE.format(size=size))[1],
            con.raw.sql(NATIVE.format(size=size)).fetchall(),
        )
        assert [(r[0], r[1], r[3]) for r in got] == [(r[0], r[1], r[3]) for r in expected]
        assert got[-1] == ("empty", None, None, None)
        np.testing.assert_allclose([s for *_, s, _ in got[:-1]], [s for *_, s, _ in expected[:-1]], rtol=1e-5)
    model = digits_example / "models" / "digits-1.pts"
    con.sql(f"CREATE MODEL ds.digits2 OPTIONS(model_type='pytorch', model_path='{model}')")
    two = (
        "SELECT predict(CASE WHEN uri < '5' THEN 'ds.digits' ELSE 'ds.digits2' END, decode_image(data)) "
        "FROM blobs ORDER BY uri"
    )
    assert _rows(con, two)[1] == con.raw.sql(two).fetchall()  # a model per row: decoded first


def test_native_decoding_errors_are_those_of_decode_then_predict(con: SqlConnection, tmp_path: Path) -> None:
    pngs = _pngs(tmp_path, 200)
    _insert(con, [*pngs[:150], ("bad", b"not an image at all"), *pngs[150:]])
    query = "SELECT predict('{model}', decode_image(data)) FROM blobs"
    for model in ("ds.digits", "nope"):  # the bad image is reported before the unknown model
        with pytest.raises(SqlError, match=r"^statement 1: decode_image: row 150 is not an image \(19 bytes"):
            con.fetch(con.run_script(query.format(model=model)))
    con.sql("DELETE FROM blobs WHERE uri = 'bad'")
    with pytest.raises(
        SqlError, match=r"^statement 1: model 'nope' not found: register it with CREATE MODEL"
    ):
        con.fetch(con.run_script(query.format(model="nope")))
    _insert(con, [("z_larger", _pngs(tmp_path, 1, side=30)[0][1])])
    with pytest.raises(SqlError, match=r"input arrays differ in size \(28, 30\).*decode_image\(data, height"):
        con.fetch(con.run_script(query.format(model="ds.digits")))
