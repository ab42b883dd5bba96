"""matrix_factorization (explicit feedback) and ML.RECOMMEND through the Python SQL entry point:
BigQuery's options and output columns, and ratings recovered from a low-rank matrix."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import inferline.sql
from inferline.errors import SqlError
from inferline.sql import SqlConnection

USERS, ITEMS = 30, 20


@pytest.fixture(scope="module")
def con(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[SqlConnection, dict[tuple[int, str], float]]]:
    """A model trained on ~60% of a rank-2 rating matrix; the ratings it never saw."""
    rng = np.random.default_rng(3)
    users, items = rng.normal(size=(USERS, 2)), rng.normal(size=(ITEMS, 2))
    truth = {(u, f"m{i}"): 3.0 + float(users[u] @ items[i]) for u in range(USERS) for i in range(ITEMS)}
    seen = [pair for pair in truth if rng.random() < 0.6]
    unseen = {pair: value for pair, value in truth.items() if pair not in set(seen)}
    table = pa.table(
        {
            "user_id": [u for u, _ in seen],
            "movie": [m for _, m in seen],
            "stars": [truth[p] + float(rng.normal(0, 0.05)) for p in seen],
        }
    )
    connection = inferline.sql.connect(store=str(Path(tmp_path_factory.mktemp("store"))))
    connection.raw.register("generated", table)
    connection.raw.execute("CREATE TABLE ratings AS SELECT * FROM generated")
    connection.sql(
        "CREATE MODEL ds.movies OPTIONS(model_type='matrix_factorization', feedback_type='EXPLICIT', "
        "user_col='user_id', item_col='movie', rating_col='stars', num_factors=2, l2_reg=0.1, "
        "max_iterations=15) AS SELECT user_id, movie, stars FROM ratings"
    )
    try:
        yield connection, unseen
    finally:
        connection.close()


def test_recommend_every_pair_predicts_unseen_ratings(
    con: tuple[SqlConnection, dict[tuple[int, str], float]],
) -> None:
    connection, unseen = con
    result = connection.sql("SELECT * FROM ML.RECOMMEND(MODEL ds.movies)")
    assert result.columns == ["user_id", "movie", "predicted_stars"]
    rows = {(u, m): r for u, m, r in result.fetchall()}
    assert len(rows) == USERS * ITEMS
    errors = np.array([rows[pair] - value for pair, value in unseen.items()])
    spread = np.std(list(unseen.values()))
    assert np.sqrt(np.mean(errors**2)) < 0.2 * spread  # ratings the model never saw, recovered


def test_recommend_for_given_users_items_and_pairs(
    con: tuple[SqlConnection, dict[tuple[int, str], float]],
) -> None:
    connection, _ = con
    one = connection.sql(
        "SELECT * FROM ML.RECOMMEND(MODEL ds.movies, (SELECT 3 AS user_id UNION ALL SELECT 999)) "
        "ORDER BY user_id, movie"
    ).fetchall()
    assert [r[0] for r in one] == [3] * ITEMS + [999] * ITEMS
    assert all(r[2] is not None for r in one[:ITEMS]) and all(r[2] is None for r in one[ITEMS:])
    pairs = connection.sql(
        "SELECT * FROM ML.RECOMMEND(MODEL ds.movies, TABLE ratings) WHERE user_id = 3 ORDER BY movie"
    )
    assert pairs.columns == ["user_id", "movie", "predicted_stars", "stars"]  # other columns pass through
    for user, movie, predicted, stars in pairs.fetchall():
        assert (user, predicted) == (3, pytest.approx(stars, abs=0.25))
        assert movie.startswith("m")
    [metrics] = connection.sql("SELECT r2_score FROM ML.EVALUATE(MODEL ds.movies)").fetchall()
    assert metrics[0] > 0.95
    info = connection.sql("SELECT input, category_count FROM ML.FEATURE_INFO(MODEL ds.movies)").fetchall()
    assert info == [("user_id", USERS), ("movie", ITEMS)]


def test_weights_are_factors_and_intercepts_that_give_the_ratings(
    con: tuple[SqlConnection, dict[tuple[int, str], float]],
) -> None:
    connection, _ = con
    result = connection.sql("SELECT * FROM ML.WEIGHTS(MODEL ds.movies)")
    assert result.columns == ["processed_input", "feature", "factor_weights", "intercept"]
    rows = result.fetchall()
    assert [r[0] for r in rows] == ["user_id"] * USERS + ["movie"] * ITEMS
    vectors = {(kind, key): (np.array([f["weight"] for f in weights]), b) for kind, key, weights, b in rows}
    assert [f["factor"] for f in rows[0][2]] == [1, 2]
    recommended = connection.sql("SELECT * FROM ML.RECOMMEND(MODEL ds.movies) WHERE user_id = 7").fetchall()
    for user, movie, predicted in recommended:
        (u, bu), (i, bi) = vectors[("user_id", str(user))], vectors[("movie", movie)]
        assert float(u @ i) + bu + bi == pytest.approx(predicted, rel=1e-9)


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        (
            "CREATE MODEL ds.x OPTIONS(model_type='matrix_factorization', feedback_type='IMPLICIT') "
            "AS SELECT * FROM ratings",
            r"feedback_type must be 'EXPLICIT' \(IMPLICIT is not supported\), got 'IMPLICIT'",
        ),
        (
            "CREATE MODEL ds.x OPTIONS(model_type='matrix_factorization') AS SELECT * FROM ratings",
            r"the query has no column\(s\) user, item, rating \(columns: user_id, movie, stars\); name them",
        ),
        (
            "SELECT * FROM ML.CENTROIDS(MODEL ds.movies)",
            r"ML.CENTROIDS\(MODEL ds.movies\): ML.CENTROIDS does not take matrix_factorization models",
        ),
        (
            "SELECT * FROM ML.RECOMMEND(MODEL ds.movies, (SELECT 1 AS a, 2 AS b))",
            r"ML.RECOMMEND\(MODEL ds.movies\): the input must have the columns user_id and movie",
        ),
    ],
)
def test_errors_name_the_option_or_the_columns(
    con: tuple[SqlConnection, dict[tuple[int, str], float]], statement: str, message: str
) -> None:
    with pytest.raises(SqlError, match=message):
        con[0].sql(statement)
