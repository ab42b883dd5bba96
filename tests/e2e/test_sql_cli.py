"""`inferline sql` as a user runs it: queries, scripts, output formats, one-line errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from tests.conftest import CliRunner

FEATURES = "sepal_length, sepal_width, petal_length, petal_width"
SETUP = (
    "CREATE OR REPLACE MODEL ds.iris "
    "OPTIONS(model_type='sklearn', model_path='examples/iris/models/iris-*.joblib');\n"
    "CREATE OR REPLACE TABLE flowers AS SELECT * FROM read_csv('examples/iris/data/iris.csv');\n"
)


def test_script_file_then_a_second_process_reads_the_catalog(cli: CliRunner, project: Path) -> None:
    (project / "setup.sql").write_text(
        "-- register the model and the data\n" + SETUP + "SELECT count(*) AS n FROM flowers;\n"
    )
    first = cli("sql", "--db", "w.duckdb", "-f", "setup.sql", "--format", "json")
    assert json.loads(first.stdout) == {"n": 150}
    second = cli(
        "sql",
        "--db",
        "w.duckdb",
        "--format",
        "csv",
        f"SELECT id, target, predict('ds.iris', {FEATURES}) AS p FROM flowers ORDER BY id",
    )
    rows = list(csv.DictReader(io.StringIO(second.stdout)))
    assert len(rows) == 150
    assert sum(float(r["p"]) == float(r["target"]) for r in rows) >= 145


def test_ml_predict_table_output(cli: CliRunner) -> None:
    result = cli(
        "sql",
        SETUP + f"SELECT * FROM ML.PREDICT(MODEL ds.iris, (SELECT CAST(id AS VARCHAR) AS id, {FEATURES} "
        "FROM flowers)) ORDER BY CAST(id AS INT) LIMIT 2",
    )
    lines = result.stdout.splitlines()
    assert "predicted_label" in lines[1] and "sepal_length" in lines[1]
    assert lines[-1] == "2 rows"


def test_errors_are_one_line_naming_statement_and_construct(cli: CliRunner, project: Path) -> None:
    result = cli("sql", SETUP + "SELECT * FROM ML.FORECAST(MODEL ds.iris)", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: statement 3: ML.FORECAST is not supported; inferline runs ML.PREDICT, ML.EVALUATE, "
        "ML.CONFUSION_MATRIX, ML.ROC_CURVE, the trained models' ML.TRAINING_INFO, ML.FEATURE_INFO, "
        "ML.WEIGHTS, ML.CENTROIDS, ML.EXPLAIN_PREDICT, ML.GLOBAL_EXPLAIN, ML.DETECT_ANOMALIES and "
        "BigQuery ML's image and preprocessing functions"
    ]
    (project / "bad.sql").write_text(SETUP + "SELECT predict('ds.iris', 1.0, 2.0) FROM flowers;")
    result = cli("sql", "-f", "bad.sql", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: statement 3: predict('ds.iris'): model ds.iris/1 failed on input")
    assert len(result.stderr.strip().splitlines()) == 1


def test_usage_errors(cli: CliRunner) -> None:
    result = cli("sql", check=False)
    assert result.returncode == 1
    assert "error: inferline sql: give a QUERY or -f FILE.sql (one of them)" in result.stderr
    result = cli("sql", "SELECT 1", "--format", "xml", check=False)
    assert "error: --format 'xml': expected one of table, csv, json" in result.stderr
    result = cli("sql", "-f", "missing.sql", check=False)
    assert "error: missing.sql: cannot read SQL file (No such file or directory)" in result.stderr
