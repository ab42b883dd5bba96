"""Google's BigQuery ML training tutorials, run through `inferline sql` as a user would.

The penguins tutorial ("Create a linear regression model") runs verbatim over a local
`bigquery-public-data.ml_datasets.penguins` table with the public table's columns (generated
here, with a few NULLs as in the real data). The results are checked against scikit-learn
fitted directly on the same rows with BigQuery's automatic preprocessing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from sklearn import metrics
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from inferline.sql.training import TrainOptions, split_rows
from tests.conftest import CliRunner

NUMERIC = ["culmen_length_mm", "culmen_depth_mm", "flipper_length_mm"]
SPECIES = [
    "Adelie Penguin (Pygoscelis adeliae)",
    "Chinstrap penguin (Pygoscelis antarctica)",
    "Gentoo penguin (Pygoscelis papua)",
]

CREATE = """CREATE OR REPLACE MODEL `bqml_tutorial.penguins_model`
OPTIONS
  (model_type='linear_reg',
  input_label_cols=['body_mass_g']) AS
SELECT
  *
FROM
  `bigquery-public-data.ml_datasets.penguins`
WHERE
  body_mass_g IS NOT NULL"""

EVALUATE = """SELECT
  *
FROM
  ML.EVALUATE(MODEL `bqml_tutorial.penguins_model`,
    (
    SELECT
      *
    FROM
      `bigquery-public-data.ml_datasets.penguins`
    WHERE
      body_mass_g IS NOT NULL))"""

PREDICT = """SELECT
  *
FROM
  ML.PREDICT(MODEL `bqml_tutorial.penguins_model`,
    (
    SELECT
      *
    FROM
      `bigquery-public-data.ml_datasets.penguins`
    WHERE
      island = 'Biscoe'))"""


def _penguins(rows: int = 240) -> pa.Table:
    rng = np.random.default_rng(7)
    kind = rng.integers(0, 3, rows)
    sex = rng.choice(np.array(["MALE", "FEMALE"], dtype=object), rows)
    length = rng.normal(39 + 6 * kind, 2.5)
    depth = rng.normal(18.5 - 3.5 * (kind == 2), 1.0)
    flipper = rng.normal(190 + 25 * (kind == 2), 6.0)
    mass = 45 * flipper - 4800 + 350 * (sex == "MALE") + 20 * length + rng.normal(0, 250, rows)
    island = rng.choice(np.array(["Biscoe", "Dream", "Torgersen"], dtype=object), rows)
    # As in the public table: a few NULL measurements and sexes, and NULL masses the tutorial drops.
    length_list: list[float | None] = list(length)
    sex_list: list[str | None] = list(sex)
    mass_list: list[float | None] = list(np.round(mass))
    for i in (3, 50):
        length_list[i] = None
    for i in (8, 90, 151):
        sex_list[i] = None
    mass_list[120] = None
    return pa.table(
        {
            "species": np.array(SPECIES, dtype=object)[kind],
            "island": island,
            "culmen_length_mm": pa.array(length_list, pa.float64()),
            "culmen_depth_mm": depth,
            "flipper_length_mm": flipper,
            "body_mass_g": pa.array(mass_list, pa.float64()),
            "sex": pa.array(sex_list, pa.string()),
        }
    )


def _write(project: Path, table: pa.Table) -> None:
    with duckdb.connect(str(project / "w.duckdb")) as con:
        con.execute("CREATE SCHEMA ml_datasets")
        con.register("generated", table)
        con.execute("CREATE TABLE ml_datasets.penguins AS SELECT * FROM generated")


def _direct(estimator: Any, text: list[str]) -> Pipeline:
    """BigQuery's automatic preprocessing, written out with scikit-learn over named columns."""
    numbers = Pipeline([("impute", SimpleImputer(strategy="mean")), ("scale", StandardScaler())])
    strings = Pipeline(
        [
            ("impute", SimpleImputer(strategy="constant", missing_values=None, fill_value="")),
            ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
        ]
    )
    columns = ColumnTransformer([("numbers", numbers, NUMERIC), ("strings", strings, text)])
    return Pipeline([("preprocess", columns), ("model", estimator)])


def _frame(table: pa.Table) -> Any:
    """The table in pandas, its missing strings None (as the SQL side reads them)."""
    frame = table.to_pandas()
    for column in ("species", "island", "sex"):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def _json_rows(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_penguins_linear_regression_tutorial(cli: CliRunner, project: Path) -> None:
    table = _penguins()
    _write(project, table)
    # One process trains and evaluates (each `inferline sql` start imports scikit-learn and skops).
    evaluation = _json_rows(
        cli("sql", "--db", "w.duckdb", "--format", "json", f"{CREATE};\n{EVALUATE}").stdout
    )
    stored = sorted((project / "model_store" / "bqml_tutorial.penguins_model").glob("*/model.skops"))
    assert [p.parent.name for p in stored] == ["1"]

    frame = _frame(table)
    frame = frame[frame["body_mass_g"].notna()]
    features = frame.drop(columns=["body_mass_g"])
    direct = _direct(LinearRegression(), ["species", "island", "sex"]).fit(features, frame["body_mass_g"])

    # Rows with a NULL feature are predicted too, imputed as at training (BigQuery ML: a NULL
    # number is the training mean, a NULL string its own category), as the direct Pipeline does.
    truth = frame["body_mass_g"]
    expected = direct.predict(features)
    assert evaluation[0]["mean_absolute_error"] == pytest.approx(metrics.mean_absolute_error(truth, expected))
    assert evaluation[0]["r2_score"] == pytest.approx(metrics.r2_score(truth, expected))
    assert evaluation[0]["r2_score"] > 0.7

    rows = _json_rows(cli("sql", "--db", "w.duckdb", "--format", "json", PREDICT).stdout)
    biscoe = features[features["island"] == "Biscoe"]
    assert list(rows[0])[0] == "predicted_body_mass_g"
    assert len(rows) == len(biscoe) and any(r["sex"] is None or r["culmen_length_mm"] is None for r in rows)
    got = {(r["culmen_depth_mm"], r["flipper_length_mm"]): r["predicted_body_mass_g"] for r in rows}
    keys = zip(biscoe["culmen_depth_mm"], biscoe["flipper_length_mm"], strict=True)
    want = dict(zip(keys, direct.predict(biscoe), strict=True))
    assert len(want) > 40
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-6)


def test_logistic_regression_species_and_retraining(cli: CliRunner, project: Path) -> None:
    table = _penguins()
    _write(project, table)
    train = (
        "CREATE OR REPLACE MODEL bqml_tutorial.species OPTIONS(model_type='logistic_reg', "
        "input_label_cols=['species'], l2_reg=0.5, max_iterations=200, data_split_method='RANDOM', "
        "data_split_eval_fraction=0.25) "
        "AS SELECT * EXCEPT (body_mass_g) FROM `bigquery-public-data.ml_datasets.penguins`"
    )
    query = (
        "SELECT * FROM ML.PREDICT(MODEL bqml_tutorial.species, "
        "(SELECT * EXCEPT (body_mass_g) FROM `bigquery-public-data.ml_datasets.penguins` "
        "WHERE culmen_length_mm IS NOT NULL AND sex IS NOT NULL))"
    )
    # Trained twice (OR REPLACE gives a new store version), then queried, in one process.
    result = cli("sql", "--db", "w.duckdb", "--format", "json", f"{train}; {train}; {query}")
    versions = sorted(p.name for p in (project / "model_store" / "bqml_tutorial.species").glob("[0-9]*"))
    assert versions == ["1", "2"]

    frame = _frame(table).drop(columns=["body_mass_g"])
    features = frame.drop(columns=["species"])
    direct = _direct(LogisticRegression(C=2.0, max_iter=200), ["island", "sex"])
    held_out = split_rows(
        len(frame), TrainOptions("logistic_reg", "species", split="RANDOM", eval_fraction=0.25)
    )
    direct.fit(features[~held_out], frame["species"][~held_out])
    rows = _json_rows(result.stdout)
    assert list(rows[0])[:2] == ["predicted_species", "predicted_species_probs"]
    complete = features[features.notna().all(axis=1)]
    assert len(rows) == len(complete)
    # As BigQuery: a list of {label, prob}, one per class.
    assert [p["label"] for p in rows[0]["predicted_species_probs"]] == SPECIES
    np.testing.assert_allclose(
        [[p["prob"] for p in r["predicted_species_probs"]] for r in rows],
        direct.predict_proba(complete),
        atol=1e-6,
    )
    assert [r["predicted_species"] for r in rows] == list(direct.predict(complete))

    # Without input data, ML.EVALUATE gives the metrics of the rows the RANDOM split held out,
    # worked out at training (a NULL feature imputed, as BigQuery does).
    evaluation = _json_rows(
        cli(
            "sql",
            "--db",
            "w.duckdb",
            "--format",
            "json",
            "SELECT * FROM ML.EVALUATE(MODEL bqml_tutorial.species)",
        ).stdout
    )[0]
    tested = features[held_out]
    truth = frame["species"][held_out]
    assert tested.isna().any(axis=None) and 40 < len(tested) < 70
    assert evaluation["accuracy"] == pytest.approx(metrics.accuracy_score(truth, direct.predict(tested)))
    assert evaluation["log_loss"] == pytest.approx(
        metrics.log_loss(truth, direct.predict_proba(tested), labels=direct.classes_), rel=1e-4
    )

    failed = cli(
        "sql",
        "--db",
        "w.duckdb",
        "CREATE MODEL bqml_tutorial.species OPTIONS(model_type='logistic_reg', "
        "input_label_cols=['species'], num_clusters=3) AS SELECT * FROM ml_datasets.penguins",
        check=False,
    )
    assert failed.returncode != 0
    assert (
        failed.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "option 'num_clusters' is not supported for model_type='logistic_reg' (supported: model_type, "
            "data_split_method, data_split_eval_fraction, data_split_col, input_label_cols, "
            "enable_global_explain, l1_reg, l2_reg, max_iterations, learn_rate, auto_class_weights, "
            "class_weights)"
        )
    )


def test_tree_kmeans_and_pca_models_equal_the_libraries(cli: CliRunner, project: Path) -> None:
    import xgboost as xgb
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import OrdinalEncoder

    table = _penguins()
    _write(project, table)
    source = "`bigquery-public-data.ml_datasets.penguins`"
    complete = f"(SELECT * FROM {source} WHERE culmen_length_mm IS NOT NULL AND sex IS NOT NULL)"
    numbers = ", ".join(NUMERIC)
    script = f"""
    CREATE MODEL bqml_tutorial.trees OPTIONS(model_type='boosted_tree_classifier',
      input_label_cols=['species'], max_iterations=4, max_tree_depth=3, learn_rate=0.5,
      early_stop=FALSE, data_split_method='NO_SPLIT') AS SELECT * EXCEPT (body_mass_g) FROM {source};
    CREATE MODEL bqml_tutorial.clusters OPTIONS(model_type='kmeans', num_clusters=3)
      AS SELECT {numbers} FROM {source};
    CREATE MODEL bqml_tutorial.components OPTIONS(model_type='pca', num_principal_components=2)
      AS SELECT {numbers} FROM {source};
    CREATE TABLE kept AS SELECT row_number() OVER () AS rid, * EXCLUDE (body_mass_g) FROM {complete};
    SELECT t.predicted_species, t.predicted_species_probs, c.CENTROID_ID, c.NEAREST_CENTROIDS_DISTANCE,
      p.principal_component_1, p.principal_component_2
    FROM ML.PREDICT(MODEL bqml_tutorial.trees, TABLE kept) AS t
    JOIN ML.PREDICT(MODEL bqml_tutorial.clusters, TABLE kept) AS c USING (rid)
    JOIN ML.PREDICT(MODEL bqml_tutorial.components, TABLE kept) AS p USING (rid)
    ORDER BY rid
    """
    rows = _json_rows(cli("sql", "--db", "w.duckdb", "--format", "json", script).stdout)
    trees = clusters = components = rows
    frame = _frame(table)
    kept = frame[frame["culmen_length_mm"].notna() & frame["sex"].notna()]
    count = len(kept)
    assert len(components) == count

    # Boosted trees: XGBoost on BigQuery's tree preprocessing (mean imputation, label encoding).
    features = frame.drop(columns=["body_mass_g", "species"])
    text = ["island", "sex"]
    encode = ColumnTransformer(
        [
            ("numbers", SimpleImputer(strategy="mean"), NUMERIC),
            ("strings", Pipeline([
                ("impute", SimpleImputer(strategy="constant", missing_values=None, fill_value="")),
                ("encode", OrdinalEncoder()),
            ]), text),
        ]
    )  # fmt: skip
    matrix = encode.fit_transform(features[["island", *NUMERIC, "sex"]])
    classes = np.unique(frame["species"])
    params = {"eta": 0.5, "max_depth": 3, "lambda": 1.0, "tree_method": "hist", "seed": 0,
              "objective": "multi:softprob", "num_class": 3, "eval_metric": "mlogloss"}  # fmt: skip
    booster = xgb.train(params, xgb.DMatrix(matrix, label=np.searchsorted(classes, frame["species"])), 4)
    expected = booster.predict(xgb.DMatrix(encode.transform(kept[["island", *NUMERIC, "sex"]])))
    got = np.array([[p["prob"] for p in r["predicted_species_probs"]] for r in trees])
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert [r["predicted_species"] for r in trees] == list(classes[np.argmax(expected, axis=1)])

    # k-means and PCA: scikit-learn on standardised columns (NULLs imputed by the mean).
    scaled = Pipeline([("impute", SimpleImputer(strategy="mean")), ("scale", StandardScaler())])
    points = scaled.fit_transform(frame[NUMERIC])
    kmeans = KMeans(n_clusters=3, max_iter=20, random_state=0).fit(points)
    wanted = scaled.transform(kept[NUMERIC])
    assert [r["CENTROID_ID"] for r in clusters] == list(kmeans.predict(wanted) + 1)
    nearest = clusters[0]["NEAREST_CENTROIDS_DISTANCE"]
    assert [d["CENTROID_ID"] for d in nearest][0] == clusters[0]["CENTROID_ID"]
    np.testing.assert_allclose(
        sorted(d["DISTANCE"] for d in nearest), np.sort(kmeans.transform(wanted[:1])[0]), rtol=1e-9
    )
    pca = PCA(n_components=2, random_state=0).fit(points)
    np.testing.assert_allclose(
        [[r["principal_component_1"], r["principal_component_2"]] for r in components],
        pca.transform(wanted),
        rtol=1e-6,
        atol=1e-9,
    )
