"""XGBoost, LightGBM and CatBoost models trained here, through a pipeline, SQL and the server."""

from __future__ import annotations

from pathlib import Path

import duckdb
import httpx
import numpy as np
import pandas as pd
import pytest

import inferline.sql
from inferline.models.store import ModelStore
from tests.conftest import CliRunner
from tests.e2e.server import running_server

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")
cb = pytest.importorskip("catboost")

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="module")
def boosters(
    iris_example: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, object, object, object]:
    """An XGBoost Booster trained on named iris columns (`iris.json`), a LightGBM one (`iris.txt`)
    and a CatBoost classifier (`iris.cbm`)."""
    root = tmp_path_factory.mktemp("boosting")
    frame = pd.read_csv(iris_example / "data" / "iris.csv")
    x, y = frame[FEATURES], frame["target"]
    xgboost = xgb.train({"objective": "multi:softprob", "num_class": 3}, xgb.DMatrix(x, label=y), 10)
    xgboost.save_model(str(root / "iris.json"))
    lightgbm = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1}, lgb.Dataset(x.to_numpy(), label=y), 10
    )
    lightgbm.save_model(str(root / "iris.txt"))
    catboost = cb.CatBoostClassifier(iterations=10, depth=3, verbose=False, allow_writing_files=False)
    catboost.fit(x, y).save_model(str(root / "iris.cbm"))
    return root, xgboost, lightgbm, catboost


def _expected(iris_example: Path, xgboost: object, lightgbm: object) -> tuple[np.ndarray, np.ndarray]:
    x = pd.read_csv(iris_example / "data" / "iris.csv")[FEATURES]
    return xgboost.predict(xgb.DMatrix(x)), lightgbm.predict(x.to_numpy())  # type: ignore[attr-defined]


SPEC = """
name: boosted
source: {{kind: csv, path: examples/iris/data/iris.csv}}
key: id
models:
  - {{name: xgb, uri: {root}/iris.json, inputs: [{features}]}}
  - {{name: lgb, uri: {root}/iris.txt, inputs: [{features}]}}
  - {{name: cbt, uri: {root}/iris.cbm, inputs: [{features}]}}
sink: {{kind: duckdb, path: out.duckdb, table: boosted}}
batch: {{max_size: 64}}
"""


def test_pipeline_runs_both_side_by_side(
    boosters: tuple[Path, object, object, object], iris_example: Path, project: Path, cli: CliRunner
) -> None:
    root, xgboost, lightgbm, catboost = boosters
    (project / "boosted.yaml").write_text(SPEC.format(root=root, features=", ".join(FEATURES)))
    result = cli("run", "boosted.yaml")
    assert "150 rows read, 150 predicted, 0 dead-lettered" in result.stdout
    with duckdb.connect(str(project / "out.duckdb")) as con:
        rows = con.execute(
            "SELECT xgb_prediction, xgb_scores, lgb_prediction, lgb_scores, cbt_prediction, cbt_scores "
            "FROM boosted ORDER BY CAST(key AS INT)"
        ).fetchall()
    want_xgb, want_lgb = _expected(iris_example, xgboost, lightgbm)
    np.testing.assert_allclose([r[1] for r in rows], want_xgb, rtol=1e-5)
    np.testing.assert_allclose([r[3] for r in rows], want_lgb, rtol=1e-9)
    assert [r[0] for r in rows] == want_xgb.argmax(axis=1).tolist()
    assert [r[2] for r in rows] == want_lgb.argmax(axis=1).tolist()
    x = pd.read_csv(iris_example / "data" / "iris.csv")[FEATURES]
    np.testing.assert_allclose([r[5] for r in rows], catboost.predict_proba(x), rtol=1e-9)  # type: ignore[attr-defined]
    assert [r[4] for r in rows] == catboost.predict(x).reshape(-1).tolist()  # type: ignore[attr-defined]


def test_sql_ml_predict_matches_xgboost_columns_by_name(
    boosters: tuple[Path, object, object, object], iris_example: Path, tmp_path: Path
) -> None:
    root, xgboost, lightgbm, catboost = boosters
    store = tmp_path / "store"
    ModelStore(str(store)).add("xgb_iris", str(root / "iris.json"))
    ModelStore(str(store)).add("lgb_iris", str(root / "iris.txt"), inputs=FEATURES)
    ModelStore(str(store)).add("cbt_iris", str(root / "iris.cbm"))
    iris_csv = iris_example / "data" / "iris.csv"
    # Columns in another order, with extra numeric ones: the Booster's feature names pick them.
    flowers = (
        "(SELECT id, target, petal_width, petal_length, sepal_width, sepal_length "
        f"FROM read_csv('{iris_csv}'))"
    )
    with inferline.sql.connect(store=str(store)) as con:
        xgb_rows = con.sql(
            f"SELECT predicted_label, probabilities FROM ML.PREDICT(MODEL xgb_iris, {flowers}) ORDER BY id"
        ).fetchall()
        lgb_rows = con.sql(
            f"SELECT predicted_label, probabilities FROM ML.PREDICT(MODEL lgb_iris, {flowers}) ORDER BY id"
        ).fetchall()
        # CatBoost keeps the DataFrame's column names: they pick the columns too.
        cbt_rows = con.sql(
            f"SELECT predicted_label, probabilities FROM ML.PREDICT(MODEL cbt_iris, {flowers}) ORDER BY id"
        ).fetchall()
    want_xgb, want_lgb = _expected(iris_example, xgboost, lightgbm)
    np.testing.assert_allclose([r[1] for r in xgb_rows], want_xgb, rtol=1e-5)
    np.testing.assert_allclose([r[1] for r in lgb_rows], want_lgb, rtol=1e-9)
    assert [r[0] for r in lgb_rows] == want_lgb.argmax(axis=1).tolist()
    want_cbt = catboost.predict_proba(pd.read_csv(iris_csv)[FEATURES])  # type: ignore[attr-defined]
    np.testing.assert_allclose([r[1] for r in cbt_rows], want_cbt, rtol=1e-9)
    assert [r[0] for r in cbt_rows] == want_cbt.argmax(axis=1).tolist()


def test_server_answers_instances(boosters: tuple[Path, object, object, object], tmp_path: Path) -> None:
    root, xgboost, lightgbm, catboost = boosters
    store = tmp_path / "store"
    ModelStore(str(store)).add("xgb_iris", str(root / "iris.json"))
    ModelStore(str(store)).add("lgb_iris", str(root / "iris.txt"))
    ModelStore(str(store)).add("cbt_iris", str(root / "iris.cbm"))
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
    want_xgb = xgboost.predict(xgb.DMatrix(np.array(rows), feature_names=FEATURES))  # type: ignore[attr-defined]
    want_lgb = lightgbm.predict(np.array(rows))  # type: ignore[attr-defined]
    want_cbt = catboost.predict_proba(np.array(rows))  # type: ignore[attr-defined]
    with running_server(store) as base:
        for name, want in (("xgb_iris", want_xgb), ("lgb_iris", want_lgb), ("cbt_iris", want_cbt)):
            answer = httpx.post(f"{base}/predictions/{name}", json={"instances": rows})
            assert answer.status_code == 200, answer.text
            assert answer.json()["predictions"] == want.argmax(axis=1).tolist()
            np.testing.assert_allclose(answer.json()["scores"], want, rtol=1e-5)
