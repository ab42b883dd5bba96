"""BigQuery ML's preprocessing functions against scikit-learn (and Google's documented examples)."""

from __future__ import annotations

import itertools
from typing import Any

import farmhash
import numpy as np
import pytest
from sklearn import preprocessing as skp
from sklearn.datasets import load_iris
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.impute import SimpleImputer
from sklearn.metrics import pairwise

from inferline.errors import SqlError
from inferline.sql import SqlConnection
from inferline.sql.preprocessing import recipe_for

X = load_iris().data


def _column(con: SqlConnection, query: str, name: str = "out") -> list[Any]:
    relation = con.sql(query)
    assert relation is not None
    return relation.to_arrow_table().column(name).to_pylist()


def _values(con: SqlConnection, expression: str) -> np.ndarray:
    return np.array(_column(con, f"SELECT {expression} AS out FROM flowers ORDER BY id"), dtype=np.float64)


def test_googles_standard_scaler_example(con: SqlConnection) -> None:
    got = _column(
        con, "SELECT f, ML.STANDARD_SCALER(f) OVER() AS out FROM UNNEST([1,2,3,4,5]) AS f ORDER BY f"
    )
    assert got == pytest.approx(
        [-1.2649110640673518, -0.6324555320336759, 0.0, 0.6324555320336759, 1.2649110640673518]
    )


def test_scalers_match_scikit_learn(con: SqlConnection) -> None:
    x = X[:, :1]
    n = len(x)
    # BigQuery divides by the sample standard deviation; scikit-learn by the population one.
    standard = skp.StandardScaler().fit_transform(x)[:, 0] * np.sqrt((n - 1) / n)
    np.testing.assert_allclose(_values(con, "ML.STANDARD_SCALER(sepal_length) OVER ()"), standard)
    np.testing.assert_allclose(
        _values(con, "ML.MIN_MAX_SCALER(sepal_length) OVER ()"), skp.MinMaxScaler().fit_transform(x)[:, 0]
    )
    np.testing.assert_allclose(
        _values(con, "ML.MAX_ABS_SCALER(sepal_length) OVER ()"), skp.MaxAbsScaler().fit_transform(x)[:, 0]
    )
    np.testing.assert_allclose(
        _values(con, "ML.ROBUST_SCALER(sepal_length) OVER ()"), skp.RobustScaler().fit_transform(x)[:, 0]
    )
    np.testing.assert_allclose(
        _values(con, "ML.ROBUST_SCALER(sepal_length, TRUE, TRUE, [10, 90]) OVER ()"),
        skp.RobustScaler(quantile_range=(10, 90)).fit_transform(x)[:, 0],
    )
    # A partition is its own window.
    target = load_iris().target
    expected = np.empty(n)
    for k in range(3):
        expected[target == k] = skp.MinMaxScaler().fit_transform(x[target == k])[:, 0]
    np.testing.assert_allclose(
        _values(con, "ML.MIN_MAX_SCALER(sepal_length) OVER (PARTITION BY target)"), expected
    )


def test_vector_functions_match_scikit_learn_and_numpy(con: SqlConnection) -> None:
    vector = "[sepal_length, sepal_width, petal_length, petal_width]"
    for p, norm in (("1", "l1"), ("2", "l2"), ("CAST('+INF' AS FLOAT64)", "max")):
        got = np.array(_column(con, f"SELECT ML.NORMALIZER({vector}, {p}) AS out FROM flowers ORDER BY id"))
        np.testing.assert_allclose(got, skp.Normalizer(norm=norm).fit_transform(X))
    np.testing.assert_allclose(_values(con, f"ML.LP_NORM({vector}, 3)"), np.linalg.norm(X, ord=3, axis=1))
    origin = X[0]
    literal = "[" + ", ".join(repr(float(v)) for v in origin) + "]"
    for kind, expected in (
        ("'EUCLIDEAN'", pairwise.euclidean_distances(X, origin[None])),
        ("'MANHATTAN'", pairwise.manhattan_distances(X, origin[None])),
        ("'COSINE'", pairwise.cosine_distances(X, origin[None])),
    ):
        np.testing.assert_allclose(
            _values(con, f"ML.DISTANCE({vector}, {literal}, {kind})"), expected[:, 0], atol=1e-12
        )


def test_buckets_match_numpy_and_kbins(con: SqlConnection) -> None:
    got = _column(con, "SELECT ML.BUCKETIZE(sepal_length, [5.0, 6.0, 7.0]) AS out FROM flowers ORDER BY id")
    assert got == [f"bin_{b + 1}" for b in np.digitize(X[:, 0], [5.0, 6.0, 7.0])]
    kbins = skp.KBinsDiscretizer(n_bins=4, encode="ordinal", strategy="quantile", quantile_method="linear")
    expected = kbins.fit_transform(X[:, :1])[:, 0].astype(int)
    got = _column(
        con, "SELECT ML.QUANTILE_BUCKETIZE(sepal_length, 4) OVER () AS out FROM flowers ORDER BY id"
    )
    assert got == [f"bin_{b + 1}" for b in expected]
    sizes = _column(
        con,
        "SELECT ML.HASH_BUCKETIZE(species, 7) AS out "
        "FROM (SELECT CAST(target AS VARCHAR) AS species FROM flowers ORDER BY id)",
    )
    assert sizes == [
        abs(np.int64(np.uint64(farmhash.fingerprint64(str(t)))).item()) % 7 for t in load_iris().target
    ]


def test_imputer_matches_simple_imputer(con: SqlConnection) -> None:
    con.sql(
        "CREATE TABLE holes AS SELECT id, "
        "CASE WHEN id % 7 = 0 THEN NULL ELSE round(sepal_length) END AS v FROM flowers"
    )
    values = np.array(_column(con, "SELECT v AS out FROM holes ORDER BY id"), dtype=np.float64)[:, None]
    for strategy in ("mean", "median", "most_frequent"):
        got = _column(con, f"SELECT ML.IMPUTER(v, '{strategy}') OVER () AS out FROM holes ORDER BY id")
        expected = SimpleImputer(strategy=strategy).fit_transform(values)[:, 0]
        np.testing.assert_allclose(np.array(got, dtype=np.float64), expected)


def test_encoders_match_scikit_learn(con: SqlConnection) -> None:
    con.sql(
        "CREATE TABLE pets AS SELECT * FROM (VALUES (1, 'dog'), (2, 'cat'), (3, 'dog'), (4, NULL), "
        "(5, 'emu'), "
        "(6, 'cat'), (7, 'dog'), (8, 'ant')) AS t(id, pet)"
    )
    pets = ["dog", "cat", "dog", None, "emu", "cat", "dog", "ant"]
    labels = _column(con, "SELECT ML.LABEL_ENCODER(pet, 10, 1) OVER () AS out FROM pets ORDER BY id")
    known = [p for p in pets if p is not None]
    encoder = skp.LabelEncoder().fit(known)  # sorted classes; BigQuery counts them from 1, 0 is NULL
    assert labels == [0 if p is None else int(encoder.transform([p])[0]) + 1 for p in pets]
    # frequency_threshold 2 keeps cat and dog; top_k 1 keeps the most frequent, dog.
    assert _column(con, "SELECT ML.LABEL_ENCODER(pet, 10, 2) OVER () AS out FROM pets ORDER BY id") == [
        2,
        1,
        2,
        0,
        0,
        1,
        2,
        0,
    ]
    assert _column(con, "SELECT ML.LABEL_ENCODER(pet, 1, 1) OVER () AS out FROM pets ORDER BY id") == [
        1,
        0,
        1,
        0,
        0,
        0,
        1,
        0,
    ]
    one_hot = _column(
        con, "SELECT ML.ONE_HOT_ENCODER(pet, 'none', 10, 1) OVER () AS out FROM pets ORDER BY id"
    )
    dense = (
        skp.OneHotEncoder(handle_unknown="ignore")
        .fit([[p] for p in known])
        .transform([[p or "?"] for p in pets])
        .toarray()
    )
    for row, expected in zip(one_hot, dense, strict=True):
        (entry,) = row
        got = np.zeros(len(dense[0]))
        if entry["index"]:
            got[entry["index"] - 1] = entry["value"]
        np.testing.assert_array_equal(got, expected)
    dummy = _column(
        con, "SELECT ML.ONE_HOT_ENCODER(pet, 'most_frequent', 10, 1) OVER () AS out FROM pets ORDER BY id"
    )
    assert [r[0]["value"] for r in dummy] == [0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0]  # dog dropped


def test_googles_multi_hot_example_and_the_text_functions(con: SqlConnection) -> None:
    docs = "SELECT ['a', 'b', 'b', 'c', NULL] AS f UNION ALL SELECT ['c', 'c', 'd', 'd', NULL] AS f"
    got = _column(
        con,
        f"SELECT f[OFFSET(0)] AS f0, ML.MULTI_HOT_ENCODER(f, 3, 1) OVER () AS out "
        f"FROM ({docs}) ORDER BY f[OFFSET(0)]",
    )
    assert [[e["index"] for e in row] for row in got] == [[1, 2, 3, 0], [3, 0]]
    texts = [["a", "b", "b", "c"], ["c", "c", "d"], ["b", "e"]]
    rows = " UNION ALL ".join(f"SELECT {i} AS id, {t!r} AS doc" for i, t in enumerate(texts))
    bags = _column(con, f"SELECT ML.BAG_OF_WORDS(doc, 10, 1) OVER () AS out FROM ({rows}) ORDER BY id")
    counts = CountVectorizer(analyzer=lambda d: d).fit(texts)
    dense = counts.transform(texts).toarray()
    for row, expected in zip(bags, dense, strict=True):
        got_dense = np.zeros(len(expected))
        for entry in row:
            got_dense[entry["index"] - 1] = entry["value"]
        np.testing.assert_array_equal(got_dense, expected)
    tfidf = _column(con, f"SELECT ML.TF_IDF(doc, 10, 1) OVER () AS out FROM ({rows}) ORDER BY id")
    vocabulary = sorted({t for d in texts for t in d})
    df = {t: sum(t in d for d in texts) for t in vocabulary}
    for row, doc in zip(tfidf, texts, strict=True):
        expected = {
            vocabulary.index(t) + 1: doc.count(t) / len(doc) * np.log(1 + 3 / (1 + df[t])) for t in set(doc)
        }
        assert {e["index"]: e["value"] for e in row} == pytest.approx(expected)
    assert _column(con, "SELECT ML.NGRAMS(['a', 'b', 'c'], [2,3], '#') AS out") == [["a#b", "a#b#c", "b#c"]]


def test_polynomial_expand_and_feature_cross(con: SqlConnection) -> None:
    got = _column(
        con,
        "SELECT ML.POLYNOMIAL_EXPAND(STRUCT(sepal_length AS a, sepal_width AS b, petal_length AS c), 3) "
        "AS out FROM flowers ORDER BY id",
    )
    poly = skp.PolynomialFeatures(degree=3, include_bias=False).fit(X[:, :3])
    expected = poly.transform(X[:, :3])
    names = [n.replace("x0", "a").replace("x1", "b").replace("x2", "c") for n in poly.get_feature_names_out()]
    assert len(got[0]) == len(names) == 19
    np.testing.assert_allclose(np.array([list(r.values()) for r in got]), expected)
    # scikit-learn's names are `a^2 b`; BigQuery's `a_a_b`: the same terms in the same order.
    assert [sorted(n.replace("^2", "").replace("^3", "")) for n in names][:3] == [["a"], ["b"], ["c"]]
    crossed = _column(con, "SELECT ML.FEATURE_CROSS(STRUCT('x' AS a, 'y' AS b, 'z' AS c), 3) AS out")[0]
    fields = {"a": "x", "b": "y", "c": "z"}
    expected_cross = {
        "_".join(combo): "_".join(fields[f] for f in combo)
        for d in (2, 3)
        for combo in itertools.combinations("abc", d)
    }
    assert crossed == expected_cross


def test_fitted_statistics_apply_elsewhere_as_over_computes_them(con: SqlConnection) -> None:
    recipe = recipe_for("STANDARD_SCALER", ["sepal_length"])
    relation = con.sql(f"SELECT {recipe.fit_sql()} FROM flowers WHERE target = 0")
    assert relation is not None
    ((mean, stddev),) = relation.fetchall()
    assert (mean, stddev) == pytest.approx((X[:50, 0].mean(), X[:50, 0].std(ddof=1)))
    applied = _values(con, recipe.apply_sql({"mean": repr(mean), "stddev": repr(stddev)}))
    np.testing.assert_allclose(applied, (X[:, 0] - mean) / stddev)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        (
            "ML.IMPUTER(sepal_length, 'mode') OVER ()",
            r"ML.IMPUTER: strategy must be 'mean', 'median' or 'most_frequent'",
        ),
        ("ML.NORMALIZER([1.0]) OVER ()", r"ML.NORMALIZER is not an analytic function; call it without OVER"),
        (
            "ML.POLYNOMIAL_EXPAND(sepal_length)",
            r"ML.POLYNOMIAL_EXPAND takes STRUCT\(a, b, ...\) \[, degree\]",
        ),
        ("ML.STANDARD_SCALER(sepal_length, 2) OVER ()", r"ML.STANDARD_SCALER takes one numeric expression"),
    ],
)
def test_preprocessing_errors(con: SqlConnection, expression: str, message: str) -> None:
    with pytest.raises(SqlError, match=r"^statement 1: " + message):
        con.sql(f"SELECT {expression} FROM flowers")


def test_preprocessing_feeds_ml_predict(con: SqlConnection, tmp_path: Any) -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression

    scaled = skp.StandardScaler().fit_transform(X) * np.sqrt(149 / 150)  # BigQuery's sample std
    model = LogisticRegression(max_iter=500).fit(scaled, load_iris().target)
    joblib.dump(model, tmp_path / "scaled-1.joblib")
    con.sql(f"CREATE MODEL ds.scaled OPTIONS(model_type='sklearn', model_path='{tmp_path}/scaled-1.joblib')")
    columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    inputs = ", ".join(f"ML.STANDARD_SCALER({c}) OVER () AS {c}" for c in columns)
    got = _column(
        con,
        "SELECT predicted_label AS out FROM ML.PREDICT(MODEL ds.scaled, "
        f"(SELECT CAST(id AS VARCHAR) AS id, {inputs} FROM flowers)) ORDER BY CAST(id AS INT)",
    )
    assert got == model.predict(scaled).tolist()


def test_array_encoders_fitted_once_equal_their_window_form(con: SqlConnection) -> None:
    from inferline.sql import bigquery

    con.sql(
        "CREATE TABLE docs AS SELECT i, "
        "[chr((97 + i % 7)::INT), chr((97 + i % 5)::INT), chr((97 + i % 3)::INT)] AS doc "
        "FROM range(60) AS t(i)"
    )
    for function in ("MULTI_HOT_ENCODER", "BAG_OF_WORDS", "TF_IDF"):
        once = f"SELECT i, ML.{function}(doc, 4, 10) OVER () AS out FROM docs ORDER BY i"
        (translated,) = bigquery.translate(once, con)
        assert "OVER" not in translated.upper()  # fitted at translation, applied as literals
        window = once.replace("OVER ()", "OVER (PARTITION BY 1)")  # the same rows, as a (slow) window
        assert _column(con, once) == _column(con, window)
