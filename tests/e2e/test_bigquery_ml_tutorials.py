"""Google's BigQuery ML training tutorials, statements verbatim except for table paths:

- "Build and use a classification model on census data" (logistic regression, with
  ML.EVALUATE, ML.PREDICT, ML.EXPLAIN_PREDICT and ML.GLOBAL_EXPLAIN);
- "Create a boosted tree model" on the same census view;
- "Create a k-means model to cluster London bicycle hires" (its CREATE MODEL computes station
  statistics with ST_DISTANCE/ST_GEOGPOINT and EXTRACT(DAYOFWEEK ...)).

The public tables are generated with the public columns (`census_adult_income`,
`london_bicycles.cycle_hire`/`cycle_stations`). One `inferline sql -f` process runs every
CREATE; the queries then run on the same warehouse in-process, and the results are compared
with scikit-learn/XGBoost fitted directly on the same rows.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn import metrics
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

import inferline.sql
from tests.conftest import subprocess_env

VIEW = """CREATE OR REPLACE VIEW
`{dataset}.input_data` AS
SELECT
age,
workclass,
marital_status,
education_num,
occupation,
hours_per_week,
income_bracket,
CASE
  WHEN MOD(functional_weight, 10) < 8 THEN 'training'
  WHEN MOD(functional_weight, 10) = 8 THEN 'evaluation'
  WHEN MOD(functional_weight, 10) = 9 THEN 'prediction'
END AS dataframe
FROM
`bigquery-public-data.ml_datasets.census_adult_income`"""

CENSUS_MODEL = """CREATE OR REPLACE MODEL
`census.census_model`
OPTIONS
( model_type='LOGISTIC_REG',
  auto_class_weights=TRUE,
  enable_global_explain=TRUE,
  data_split_method='NO_SPLIT',
  input_label_cols=['income_bracket'],
  max_iterations=15) AS
SELECT * EXCEPT(dataframe)
FROM
`census.input_data`
WHERE
dataframe = 'training'"""

CENSUS_EVALUATE = """SELECT
*
FROM
ML.EVALUATE (MODEL `census.census_model`,
  (
  SELECT
    *
  FROM
    `census.input_data`
  WHERE
    dataframe = 'evaluation'
  )
)"""

CENSUS_PREDICT = """SELECT
*
FROM
ML.PREDICT (MODEL `census.census_model`,
  (
  SELECT
    *
  FROM
    `census.input_data`
  WHERE
    dataframe = 'prediction'
  )
)"""

CENSUS_EXPLAIN = """SELECT
*
FROM
ML.EXPLAIN_PREDICT(MODEL `census.census_model`,
  (
  SELECT
    *
  FROM
    `census.input_data`
  WHERE
    dataframe = 'evaluation'),
  STRUCT(3 as top_k_features))"""

CENSUS_GLOBAL = """SELECT
  *
FROM
  ML.GLOBAL_EXPLAIN(MODEL `census.census_model`)"""

TREE_MODEL = """CREATE MODEL `bqml_tutorial.tree_model`
OPTIONS(MODEL_TYPE='BOOSTED_TREE_CLASSIFIER',
        BOOSTER_TYPE = 'GBTREE',
        NUM_PARALLEL_TREE = 1,
        MAX_ITERATIONS = 50,
        TREE_METHOD = 'HIST',
        EARLY_STOP = FALSE,
        SUBSAMPLE = 0.85,
        INPUT_LABEL_COLS = ['income_bracket'])
AS SELECT * EXCEPT(dataframe)
FROM `bqml_tutorial.input_data`
WHERE dataframe = 'training'"""

TREE_EVALUATE = """SELECT
  *
FROM
  ML.EVALUATE (MODEL `bqml_tutorial.tree_model`,
    (
    SELECT
      *
    FROM
      `bqml_tutorial.input_data`
    WHERE
      dataframe = 'evaluation'
    )
  )"""

TREE_PREDICT = """SELECT
  *
FROM
  ML.PREDICT (MODEL `bqml_tutorial.tree_model`,
    (
    SELECT
      *
    FROM
      `bqml_tutorial.input_data`
    WHERE
      dataframe = 'prediction'
    )
  )"""

STATIONSTATS = """WITH
hs AS (
SELECT
h.start_station_name AS station_name,
IF(
EXTRACT(DAYOFWEEK FROM h.start_date) = 1
OR EXTRACT(DAYOFWEEK FROM h.start_date) = 7,
'weekend',
'weekday') AS isweekday,
h.duration,
ST_DISTANCE(ST_GEOGPOINT(s.longitude, s.latitude), ST_GEOGPOINT(-0.1, 51.5)) / 1000
AS distance_from_city_center
FROM
`bigquery-public-data.london_bicycles.cycle_hire` AS h
JOIN
`bigquery-public-data.london_bicycles.cycle_stations` AS s
ON
h.start_station_id = s.id
WHERE
h.start_date
BETWEEN CAST('2015-01-01 00:00:00' AS TIMESTAMP)
AND CAST('2016-01-01 00:00:00' AS TIMESTAMP)
),
stationstats AS (
SELECT
station_name,
isweekday,
AVG(duration) AS duration,
COUNT(duration) AS num_trips,
MAX(distance_from_city_center) AS distance_from_city_center
FROM
hs
GROUP BY
station_name, isweekday
)"""

KMEANS_MODEL = f"""CREATE OR REPLACE MODEL `bqml_tutorial.london_station_clusters`
OPTIONS (
model_type = 'kmeans',
num_clusters = 4)
AS
{STATIONSTATS}
SELECT *
EXCEPT (station_name, isweekday)
FROM
stationstats"""

KMEANS_PREDICT = f"""{STATIONSTATS}
SELECT *
EXCEPT (nearest_centroids_distance)
FROM
ML.PREDICT(
MODEL `bqml_tutorial.london_station_clusters`,
(
SELECT *
FROM
stationstats
WHERE
REGEXP_CONTAINS(station_name, 'Kennington')
))"""

NUMERIC = ["age", "education_num", "hours_per_week"]
TEXT = ["workclass", "marital_status", "occupation"]
CENSUS_ROWS = 480
# Four kinds of station: (distance from the centre in km, mean trip seconds, trips a day).
KINDS = [(0.5, 600, 30), (0.8, 1800, 8), (1.0, 700, 6), (9.0, 2600, 5)]
KENNINGTON = ["Kennington Road, Vauxhall", "Kennington Lane, Vauxhall", "Kennington Oval, Oval"]


def _census() -> pa.Table:
    rng = np.random.default_rng(24)
    n = CENSUS_ROWS
    work = rng.choice(np.array([" Private", " Self-emp-not-inc", " Local-gov", " ?"]), n)
    marital = rng.choice(np.array([" Married-civ-spouse", " Never-married", " Divorced"]), n)
    occupation = rng.choice(np.array([" Exec-managerial", " Craft-repair", " Sales", " Other-service"]), n)
    age = rng.integers(17, 80, n)
    education = rng.integers(1, 17, n)
    hours = rng.integers(5, 80, n)
    score = (
        0.04 * (age - 40) + 0.35 * (education - 9) + 0.03 * (hours - 40)
        + 1.2 * (marital == " Married-civ-spouse") + 0.8 * (occupation == " Exec-managerial") - 1.5
    )  # fmt: skip
    rich = rng.random(n) < 1 / (1 + np.exp(-score))
    return pa.table(
        {
            "age": age,
            "workclass": work,
            "functional_weight": rng.integers(10_000, 500_000, n),
            "education": np.char.add(" grade-", education.astype(str)),
            "education_num": education,
            "marital_status": marital,
            "occupation": occupation,
            "relationship": rng.choice(np.array([" Husband", " Not-in-family"]), n),
            "race": rng.choice(np.array([" White", " Black"]), n),
            "sex": rng.choice(np.array([" Male", " Female"]), n),
            "capital_gain": np.zeros(n, dtype=np.int64),
            "capital_loss": np.zeros(n, dtype=np.int64),
            "hours_per_week": hours,
            "native_country": np.full(n, " United-States"),
            "income_bracket": np.where(rich, " >50K", " <=50K"),
        }
    )


def _bicycles() -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(7)
    names, latitudes, longitudes, kinds = [], [], [], []
    for k, (distance, _, _) in enumerate(KINDS):
        for j in range(5):
            names.append(KENNINGTON[j] if k == 1 and j < 3 else f"Station {k}-{j}, London")
            bearing = rng.uniform(0, 2 * np.pi)
            latitudes.append(51.5 + distance * np.cos(bearing) / 111.2)
            longitudes.append(-0.1 + distance * np.sin(bearing) / (111.2 * np.cos(np.radians(51.5))))
            kinds.append(k)
    stations = pa.table(
        {
            "id": np.arange(len(names), dtype=np.int64),
            "installed": np.ones(len(names), dtype=bool),
            "latitude": latitudes,
            "locked": np.zeros(len(names), dtype=bool),
            "longitude": longitudes,
            "name": names,
            "bikes_count": np.full(len(names), 10),
            "docks_count": np.full(len(names), 20),
        }
    )
    hires: dict[str, list[Any]] = {"rental_id": [], "duration": [], "start_date": [], "start_station_id": []}
    start = dt.datetime(2015, 3, 2)  # a Monday; two weeks of hires, and some in 2016 (left out)
    for station, kind in enumerate(kinds):
        _, seconds, daily = KINDS[kind]
        for day in range(14 + 3):
            for _ in range(int(daily * (0.5 if day % 7 >= 5 else 1.0))):
                hires["rental_id"].append(len(hires["rental_id"]))
                hires["duration"].append(int(rng.normal(seconds, seconds * 0.05)))
                shift = dt.timedelta(days=day + (300 if day >= 14 else 0), hours=int(rng.integers(6, 22)))
                hires["start_date"].append(start + shift)
                hires["start_station_id"].append(station)
    table = pa.table(hires)
    count = table.num_rows
    cycle_hire = table.append_column(
        "start_station_name", pa.array([names[s] for s in hires["start_station_id"]])
    )
    cycle_hire = cycle_hire.append_column("bike_id", pa.array(np.arange(count) % 97))
    cycle_hire = cycle_hire.append_column("end_station_id", pa.array(hires["start_station_id"]))
    return cycle_hire, stations


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A warehouse with the public tables, after `inferline sql -f` ran every tutorial CREATE."""
    folder = tmp_path_factory.mktemp("tutorials")
    hires, stations = _bicycles()
    with duckdb.connect(str(folder / "w.duckdb")) as con:
        con.execute("CREATE SCHEMA ml_datasets; CREATE SCHEMA london_bicycles")
        for name, table in (
            ("ml_datasets.census_adult_income", _census()),
            ("london_bicycles.cycle_hire", hires),
            ("london_bicycles.cycle_stations", stations),
        ):
            con.register("generated", table)
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM generated")
            con.unregister("generated")
    script = ";\n".join(
        [
            "CREATE SCHEMA census",  # `bq mk census` in the tutorial
            "CREATE SCHEMA bqml_tutorial",
            VIEW.format(dataset="census"),
            CENSUS_MODEL,
            VIEW.format(dataset="bqml_tutorial"),
            TREE_MODEL,
            KMEANS_MODEL,
        ]
    )
    (folder / "tutorials.sql").write_text(script + ";\n")
    result = subprocess.run(
        [sys.executable, "-m", "inferline", "sql", "--db", "w.duckdb", "-f", "tutorials.sql"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env(),
    )
    assert result.returncode == 0, result.stderr
    (folder / "stderr.txt").write_text(result.stderr)
    yield folder


def test_training_tells_its_progress_and_summary_on_stderr(warehouse: Path) -> None:
    lines = (warehouse / "stderr.txt").read_text().splitlines()
    assert "CREATE MODEL bqml_tutorial.tree_model: training boosted_tree_classifier on 386 rows" in lines
    assert any(
        line.startswith("CREATE MODEL bqml_tutorial.tree_model: iteration 1/50, loss ") for line in lines
    )
    summary = [
        line for line in lines if line.startswith("CREATE MODEL census.census_model: trained on 386 rows")
    ]
    assert len(summary) == 1 and ", 1 iteration, loss " in summary[0]
    assert summary[0].endswith("model_store/census.census_model/1/model.skops")


def _query(warehouse: Path, sql: str) -> pd.DataFrame:
    con = inferline.sql.connect(str(warehouse / "w.duckdb"), store=str(warehouse / "model_store"))
    try:
        relation = con.sql(sql)
        return relation.df()
    finally:
        con.close()


def _census_frame(warehouse: Path) -> pd.DataFrame:
    with duckdb.connect(str(warehouse / "w.duckdb"), read_only=True) as con:
        frame = con.execute("SELECT * FROM ml_datasets.census_adult_income").df()
    frame["dataframe"] = np.select(
        [frame["functional_weight"] % 10 < 8, frame["functional_weight"] % 10 == 8],
        ["training", "evaluation"],
        "prediction",
    )
    return frame


def _preprocess(encoder: Any, scale: bool) -> ColumnTransformer:
    numbers: list[tuple[str, Any]] = [("impute", SimpleImputer(strategy="mean"))]
    if scale:
        numbers.append(("scale", StandardScaler()))
    strings = Pipeline([("impute", SimpleImputer(strategy="constant", fill_value="")), ("encode", encoder)])
    return ColumnTransformer([("numbers", Pipeline(numbers), NUMERIC), ("strings", strings, TEXT)])


def test_census_logistic_regression_tutorial(warehouse: Path) -> None:
    frame = _census_frame(warehouse)
    train = frame[frame["dataframe"] == "training"]
    columns = ["age", "workclass", "marital_status", "education_num", "occupation", "hours_per_week"]
    preprocess = _preprocess(OneHotEncoder(handle_unknown="ignore", sparse_output=False), scale=True)
    x = preprocess.fit_transform(train[columns])
    y = train["income_bracket"].to_numpy()
    classes, counts = np.unique(y, return_counts=True)
    balanced = dict(zip(classes, len(y) / (2 * counts), strict=True))
    direct = LogisticRegression(C=np.inf, l1_ratio=0.0, max_iter=15)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # max_iterations=15, as the tutorial
        direct.fit(x, y, sample_weight=np.array([balanced[v] for v in y]))

    evaluation = _query(warehouse, CENSUS_EVALUATE).iloc[0]
    held = frame[frame["dataframe"] == "evaluation"]
    probabilities = direct.predict_proba(preprocess.transform(held[columns]))
    predicted = direct.classes_[np.argmax(probabilities, axis=1)]
    truth = held["income_bracket"]
    assert evaluation["accuracy"] == pytest.approx(metrics.accuracy_score(truth, predicted))
    assert evaluation["precision"] == pytest.approx(
        metrics.precision_score(truth, predicted, pos_label=" >50K")
    )
    assert evaluation["recall"] == pytest.approx(metrics.recall_score(truth, predicted, pos_label=" >50K"))
    assert evaluation["log_loss"] == pytest.approx(metrics.log_loss(truth, probabilities), rel=1e-6)
    assert evaluation["roc_auc"] == pytest.approx(
        metrics.roc_auc_score(truth == " >50K", probabilities[:, 1])
    )

    predictions = _query(warehouse, CENSUS_PREDICT)
    wanted = frame[frame["dataframe"] == "prediction"]
    assert list(predictions.columns[:2]) == ["predicted_income_bracket", "predicted_income_bracket_probs"]
    assert sorted(predictions["predicted_income_bracket"]) == sorted(
        direct.predict(preprocess.transform(wanted[columns]))
    )

    explained = _query(warehouse, CENSUS_EXPLAIN)
    logits = direct.decision_function(preprocess.transform(held[columns]))
    np.testing.assert_allclose(sorted(explained["prediction_value"]), sorted(logits), rtol=1e-6)
    baseline = direct.intercept_[0] + direct.coef_[0] @ x.mean(axis=0)
    np.testing.assert_allclose(explained["baseline_prediction_value"], baseline, rtol=1e-6)
    top = explained["top_feature_attributions"].iloc[0]
    assert len(top) == 3 and abs(top[0]["attribution"]) >= abs(top[1]["attribution"]) >= abs(
        top[2]["attribution"]
    )

    global_explain = _query(warehouse, CENSUS_GLOBAL)
    parts = direct.coef_[0] * (x - x.mean(axis=0))
    categories = preprocess.named_transformers_["strings"].named_steps["encode"].categories_
    names = [*NUMERIC, *(TEXT[k] for k, values in enumerate(categories) for _ in values)]
    per_feature = pd.DataFrame(parts, columns=names).T.groupby(level=0).sum().T.abs().mean()
    got = dict(zip(global_explain["feature"], global_explain["attribution"], strict=True))
    assert list(global_explain["feature"]) == list(per_feature.sort_values(ascending=False).index)
    for feature, value in per_feature.items():
        assert got[feature] == pytest.approx(value, rel=1e-6)


def test_census_boosted_tree_tutorial(warehouse: Path) -> None:
    import xgboost as xgb

    frame = _census_frame(warehouse)
    train = frame[frame["dataframe"] == "training"]
    columns = ["age", "workclass", "marital_status", "education_num", "occupation", "hours_per_week"]
    preprocess = _preprocess(
        OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=np.nan), scale=False
    )
    x = preprocess.fit_transform(train[columns])
    classes = np.unique(train["income_bracket"])
    params = {"eta": 0.3, "max_depth": 6, "lambda": 1.0, "num_parallel_tree": 1, "subsample": 0.85,
              "tree_method": "hist", "eval_metric": "logloss", "seed": 0,
              "objective": "binary:logistic"}  # fmt: skip
    label = np.searchsorted(classes, train["income_bracket"])
    booster = xgb.train(params, xgb.DMatrix(x, label=label), num_boost_round=50)

    evaluation = _query(warehouse, TREE_EVALUATE).iloc[0]
    held = frame[frame["dataframe"] == "evaluation"]
    positive = booster.predict(xgb.DMatrix(preprocess.transform(held[columns])))
    truth = held["income_bracket"]
    predicted = classes[(positive >= 0.5).astype(int)]
    assert evaluation["accuracy"] == pytest.approx(metrics.accuracy_score(truth, predicted))
    assert evaluation["f1_score"] == pytest.approx(metrics.f1_score(truth, predicted, pos_label=" >50K"))
    assert evaluation["roc_auc"] == pytest.approx(metrics.roc_auc_score(truth == " >50K", positive), rel=1e-6)

    predictions = _query(warehouse, TREE_PREDICT)
    wanted = frame[frame["dataframe"] == "prediction"]
    expected = booster.predict(xgb.DMatrix(preprocess.transform(wanted[columns])))
    got = [
        next(p["prob"] for p in probs if p["label"] == " >50K")
        for probs in predictions["predicted_income_bracket_probs"]
    ]
    np.testing.assert_allclose(sorted(got), sorted(expected), rtol=1e-5)


def test_london_bicycles_kmeans_tutorial(warehouse: Path) -> None:
    from sklearn.cluster import KMeans

    with duckdb.connect(str(warehouse / "w.duckdb"), read_only=True) as con:
        hires = con.execute(
            "SELECT h.start_station_name AS station_name, h.start_date, h.duration, s.latitude, "
            "s.longitude FROM london_bicycles.cycle_hire h JOIN london_bicycles.cycle_stations s "
            "ON h.start_station_id = s.id WHERE h.start_date BETWEEN '2015-01-01' AND '2016-01-01'"
        ).df()
    lat, lon = np.radians(hires["latitude"]), np.radians(hires["longitude"])
    lat0, lon0 = np.radians(51.5), np.radians(-0.1)
    half = np.sin((lat0 - lat) / 2) ** 2 + np.cos(lat) * np.cos(lat0) * np.sin((lon0 - lon) / 2) ** 2
    hires["distance_from_city_center"] = 2 * 6371008.8 * np.arcsin(np.sqrt(half)) / 1000
    hires["isweekday"] = np.where(hires["start_date"].dt.day_of_week >= 5, "weekend", "weekday")
    stats = hires.groupby(["station_name", "isweekday"]).agg(
        duration=("duration", "mean"), num_trips=("duration", "count"),
        distance_from_city_center=("distance_from_city_center", "max"),
    ).reset_index()  # fmt: skip
    features = ["duration", "num_trips", "distance_from_city_center"]
    scaler = StandardScaler().fit(stats[features])
    kmeans = KMeans(n_clusters=4, max_iter=20, random_state=0).fit(scaler.transform(stats[features]))
    stats["direct"] = kmeans.labels_

    predicted = _query(warehouse, KMEANS_PREDICT)
    assert list(predicted.columns) == ["CENTROID_ID", "station_name", "isweekday", *features]
    assert sorted(set(predicted["station_name"])) == sorted(KENNINGTON)
    joined = predicted.merge(stats, on=["station_name", "isweekday"])
    assert len(joined) == 6
    # The same clusters as scikit-learn's (their numbers may differ): a one-to-one mapping.
    pairs = set(zip(joined["CENTROID_ID"], joined["direct"], strict=True))
    assert len({a for a, _ in pairs}) == len({b for _, b in pairs}) == len(pairs)
    centroids = _query(warehouse, "SELECT * FROM ML.CENTROIDS(MODEL `bqml_tutorial.london_station_clusters`)")
    ours = centroids.pivot(index="centroid_id", columns="feature", values="numerical_value")[
        features
    ].to_numpy()
    theirs = scaler.inverse_transform(kmeans.cluster_centers_)
    np.testing.assert_allclose(ours[np.lexsort(ours.T)], theirs[np.lexsort(theirs.T)], rtol=1e-6)
