"""Models trained by `CREATE MODEL ... AS SELECT` outside SQL (issue 24): one with a TRANSFORM
clause, fed rows with NULL features, in a pipeline (`inferline run`) and `inferline serve`,
answer what `ML.PREDICT` answers. BigQuery ML saves the TRANSFORM with the model and imputes
NULL features at prediction as at training; the store carries both, so no SQL is needed.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import inferline.sql
from tests.conftest import subprocess_env
from tests.e2e.server import running_server

TRAIN = """CREATE MODEL ds.scaled
TRANSFORM(ML.STANDARD_SCALER(x) OVER () AS x_scaled, ML.QUANTILE_BUCKETIZE(x, 3) OVER () AS x_bucket,
          colour, y)
OPTIONS(model_type='linear_reg', input_label_cols=['y']) AS
SELECT x, colour, y, note FROM measurements"""
PREDICT = """SELECT id, predicted_y FROM ML.PREDICT(MODEL ds.scaled,
  (SELECT * FROM read_parquet('rows.parquet'))) ORDER BY id"""
# Rows to predict: complete ones, a NULL number and a NULL string (imputed, not NULL answers).
ROWS = {"id": [1, 2, 3, 4], "x": [1.0, None, 7.5, 4.0], "colour": ["red", "blue", None, "green"]}
SPEC = """name: trained
source: {kind: parquet, path: rows.parquet}
model: {name: ds.scaled, store: model_store}
key: id
sink: {kind: parquet, path: out/predictions.parquet}
"""


def _inferline(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "inferline", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=240,
        check=True,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[int, float]]]:
    """A project folder with the trained model in its store, and ML.PREDICT's answer per row id
    (trained through the Python SQL entry point: the processes under test are run and serve)."""
    folder = tmp_path_factory.mktemp("trained")
    rng = np.random.default_rng(5)
    n = 90
    x = rng.normal(5.0, 2.0, n)
    colour = rng.choice(np.array(["red", "blue", "green"]), n)
    y = 2.0 * x + np.where(colour == "red", 3.0, 0.0) + rng.normal(0, 0.2, n)
    table = pa.table({"x": x, "colour": colour, "y": y, "note": [f"n{i}" for i in range(n)]})
    pq.write_table(pa.table(ROWS), folder / "rows.parquet")
    con = inferline.sql.connect(store=str(folder / "model_store"))
    try:
        con.raw.register("generated", table)
        con.raw.execute("CREATE TABLE measurements AS SELECT * FROM generated")
        con.sql(TRAIN)
        answers = con.sql(PREDICT.replace("'rows.parquet'", f"'{folder / 'rows.parquet'}'")).fetchall()
    finally:
        con.close()
    by_id = {int(i): float(value) for i, value in answers}
    assert sorted(by_id) == [1, 2, 3, 4]  # the NULL rows are predicted too
    yield folder, by_id


def test_a_pipeline_runs_the_transform_and_imputes(trained: tuple[Path, dict[int, float]]) -> None:
    folder, expected = trained
    (folder / "spec.yaml").write_text(SPEC)
    _inferline(folder, "run", "spec.yaml")
    result = pq.read_table(folder / "out" / "predictions.parquet").to_pylist()
    got = {int(r["key"]): float(r["prediction"]) for r in result}
    assert got == pytest.approx(expected, rel=1e-9)


def test_serve_runs_the_transform_and_imputes(trained: tuple[Path, dict[int, float]]) -> None:
    folder, expected = trained
    instances = [{"x": x, "colour": colour} for x, colour in zip(ROWS["x"], ROWS["colour"], strict=True)]
    with running_server(folder / "model_store", deadline_s=120) as base:
        answer = httpx.post(f"{base}/predictions/ds.scaled", json={"instances": instances}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.json()["predictions"] == pytest.approx([expected[i] for i in ROWS["id"]], rel=1e-9)
        # The raw columns the TRANSFORM reads are the served inputs ("note" is not read).
        meta = httpx.get(f"{base}/v2/models/ds.scaled", timeout=30).json()
        assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [("x", "FP64"), ("colour", "BYTES")]
