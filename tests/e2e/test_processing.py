"""Processing around the model: hooks, label maps, SQL/map steps, no-model pipelines, splits."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import duckdb
import joblib
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from inferline.examples.iris import FEATURES
from tests.conftest import CliRunner

HOOKS = '''
import numpy as np

class TopLabels:
    """Top-2 class names from the probabilities, computed in postprocess."""
    names = ["setosa", "versicolor", "virginica"]

    def setup(self, model):
        self.classes = list(model.classes_)

    def postprocess(self, batch, outputs):
        order = np.argsort(-outputs.scores, axis=1)[:, :2]
        return {"top2": [[self.names[self.classes[i]] for i in row] for row in order]}


class Fussy:
    def preprocess(self, batch):
        ids = batch.column("id").to_pylist()
        if 42 in ids:
            raise ValueError("I do not like row 42")
        return np.column_stack([batch.column(c).to_numpy() for c in
                                ["sepal_length", "sepal_width", "petal_length", "petal_width"]])


def add_ratio(batch):
    import pyarrow as pa
    import pyarrow.compute as pc
    ratio = pc.divide(batch.column("petal_length"), batch.column("petal_width"))
    return batch.append_column("petal_ratio", ratio)
'''


@pytest.fixture
def prob_model(project: Path) -> Path:
    """An iris classifier with predict_proba, saved next to the example."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    iris = load_iris()
    model = LogisticRegression(max_iter=500).fit(iris.data, iris.target)
    path = project / "models" / "iris-3.joblib"
    path.parent.mkdir()
    joblib.dump(model, path)
    (project / "my_hooks.py").write_text(HOOKS)
    return path


# Tests about steps and sinks run the ONNX model: unpickling the .joblib imports scikit-learn,
# ~1.5 s CPU of each CLI process.
ONNX_MODEL = {"name": "iris", "uri": "examples/iris/models/iris-*.onnx", "inputs": FEATURES}


def _spec(**changes: object) -> str:
    spec = yaml.safe_load(Path("examples/iris/pipeline.yaml").read_text())
    spec.update(changes)
    Path("p.yaml").write_text(yaml.safe_dump(spec))
    return "p.yaml"


def _rows() -> list[dict[str, str]]:
    with open("examples/iris/data/iris.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_hook_postprocess_top_labels_match_hand_computation(
    project: Path, prob_model: Path, cli: CliRunner
) -> None:
    model = {
        "name": "iris",
        "uri": "models/iris-*.joblib",
        "inputs": FEATURES,
        "handler": "my_hooks:TopLabels",
    }
    cli("run", _spec(model=model))
    clf = joblib.load(prob_model)
    rows = _rows()
    probs = clf.predict_proba(np.array([[float(r[f]) for f in FEATURES] for r in rows]))
    names = ["setosa", "versicolor", "virginica"]
    with duckdb.connect("warehouse.duckdb") as con:
        got = dict(con.execute("SELECT key, top2 FROM iris_predictions").fetchall())
    for row, p in zip(rows, probs, strict=True):
        first, second = np.argsort(-p)[:2]
        assert got[row["id"]] == [names[first], names[second]]


def test_labels_file_adds_label_and_top_k(project: Path, prob_model: Path, cli: CliRunner) -> None:
    Path("labels.csv").write_text("index,label\n0,setosa\n1,versicolor\n2,virginica\n")
    model = {
        "name": "iris",
        "uri": "models/iris-*.joblib",
        "inputs": FEATURES,
        "labels": "labels.csv",
        "top_k": 2,
    }
    cli("run", _spec(model=model))
    clf = joblib.load(prob_model)
    rows = _rows()
    probs = clf.predict_proba(np.array([[float(r[f]) for f in FEATURES] for r in rows]))
    names = np.array(["setosa", "versicolor", "virginica"])
    with duckdb.connect("warehouse.duckdb") as con:
        got = {
            k: (lab, tl, ts)
            for k, lab, tl, ts in con.execute(
                "SELECT key, label, top_labels, top_scores FROM iris_predictions"
            ).fetchall()
        }
    for row, p in zip(rows, probs, strict=True):
        label, top_labels, top_scores = got[row["id"]]
        order = np.argsort(-p, kind="stable")[:2]
        assert label == names[int(np.argmax(p))]
        assert top_labels == names[order].tolist()
        np.testing.assert_allclose(top_scores, p[order])


def test_hook_that_raises_dead_letters_only_its_batch(
    project: Path, prob_model: Path, cli: CliRunner
) -> None:
    model = {"name": "iris", "uri": "models/iris-*.joblib", "handler": "my_hooks:Fussy"}
    result = cli("run", _spec(model=model, batch={"max_size": 10}))
    assert "140 predicted, 10 dead-lettered" in result.stdout
    with duckdb.connect("warehouse.duckdb") as con:
        dead = con.execute(
            "SELECT key, error, stage FROM iris_predictions_errors ORDER BY key::INT"
        ).fetchall()
    assert [k for k, _, _ in dead] == [str(i) for i in range(40, 50)]
    assert all(
        "hook my_hooks:Fussy.preprocess failed: ValueError: I do not like row 42" in e for _, e, _ in dead
    )


def test_sql_step_filters_and_derives_like_duckdb_on_the_whole_file(project: Path, cli: CliRunner) -> None:
    query = (
        "SELECT id, sepal_length * 10 AS sepal_mm, sepal_length, sepal_width, petal_length, petal_width "
        "FROM input WHERE petal_length > 1.5 AND sepal_width < 3.5"
    )
    cli(
        "run",
        _spec(
            model=ONNX_MODEL,
            steps=[{"sql": query}],
            batch={"max_size": 16},
            sink={"kind": "parquet", "path": "steps.parquet"},
        ),
    )
    got = pq.read_table("steps.parquet").to_pylist()
    with duckdb.connect() as con:
        whole = con.execute(
            query.replace("FROM input", "FROM read_csv('examples/iris/data/iris.csv')")
        ).fetchall()
    assert sorted((r["id"], r["sepal_mm"]) for r in got) == sorted((w[0], w[1]) for w in whole)
    assert {r["key"] for r in got} == {str(w[0]) for w in whole}


def test_map_step_and_after_step(project: Path, prob_model: Path, cli: CliRunner) -> None:
    steps = [
        {"map": "my_hooks:add_ratio"},
        {"sql": "SELECT id, prediction, petal_ratio FROM input WHERE prediction = 2", "at": "after"},
    ]
    spec = _spec(model=ONNX_MODEL, steps=steps, key=None, sink={"kind": "jsonl", "path": "after.jsonl"})
    cli("run", spec)
    lines = [json.loads(line) for line in Path("after.jsonl").read_text().splitlines()]
    assert lines and all(r["prediction"] == 2 for r in lines)
    assert set(lines[0]) == {"key", "id", "prediction", "petal_ratio"}
    by_id = {int(r["id"]): r for r in _rows()}
    for line in lines:
        row = by_id[line["id"]]
        assert line["petal_ratio"] == pytest.approx(float(row["petal_length"]) / float(row["petal_width"]))
        assert line["key"].endswith(f"iris.csv:{line['id']}")


def test_aggregate_sql_step_is_refused_with_the_reason(project: Path, cli: CliRunner) -> None:
    steps = [{"sql": "SELECT avg(sepal_length) AS m FROM input"}]
    result = cli("run", _spec(model=ONNX_MODEL, steps=steps), check=False)
    assert result.returncode == 1
    assert "uses an aggregate" in result.stderr and "row-wise" in result.stderr and "streams" in result.stderr


def test_pipeline_without_a_model_and_a_deterministic_split(project: Path, cli: CliRunner) -> None:
    rng = np.random.default_rng(1)
    with open("big.csv", "w") as handle:
        handle.write("id,x\n")
        for i, x in enumerate(rng.normal(size=20_000)):  # enough rows to see the fractions
            handle.write(f"{i},{x:.4f}\n")
    spec = {
        "name": "prep",
        "source": {"kind": "csv", "path": "big.csv"},
        "key": "id",
        "steps": [{"sql": "SELECT id, x, x * x AS x2 FROM input"}],
        "sink": {"kind": "parquet", "path": "out/prep", "split": {"train": 0.8, "eval": 0.2, "by": "key"}},
    }
    Path("prep.yaml").write_text(yaml.safe_dump(spec))
    result = cli("run", "prep.yaml")
    assert "20,000 rows read" in result.stdout
    first = {s: set(pq.read_table(f"out/prep/{s}.parquet")["key"].to_pylist()) for s in ("train", "eval")}
    cli("run", "prep.yaml")
    second = {s: set(pq.read_table(f"out/prep/{s}.parquet")["key"].to_pylist()) for s in ("train", "eval")}
    assert first == second
    assert not first["train"] & first["eval"]
    assert len(first["train"]) + len(first["eval"]) == 20_000
    assert abs(len(first["train"]) / 20_000 - 0.8) < 0.01
    assert pq.read_table("out/prep/train.parquet").column_names == ["key", "id", "x", "x2"]


def test_bad_split_fractions(project: Path, cli: CliRunner) -> None:
    result = cli(
        "run", _spec(sink={"kind": "parquet", "path": "o", "split": {"train": 0.7, "eval": 0.2}}), check=False
    )
    assert "sink.split: expected two or more fractions adding up to 1" in result.stderr


def test_the_prepared_example_in_the_readme_runs(project: Path, cli: CliRunner) -> None:
    repo = Path(__file__).resolve().parents[2] / "examples" / "iris"
    for name in ("hooks.py", "prepared.yaml", "labels.txt"):
        (project / "examples" / "iris" / name).write_text((repo / name).read_text())
    result = cli("run", "examples/iris/prepared.yaml")
    assert "150 rows read" in result.stdout
    with duckdb.connect("warehouse.duckdb") as con:
        rows = con.execute(
            "SELECT sepal_width, prediction, label, sepal_area, sepal_length FROM iris_prepared"
        ).fetchall()
    assert rows and all(w < 4 and p != 0 for w, p, *_ in rows)
    names = ["setosa", "versicolor", "virginica"]
    assert all(label == names[p] and area == pytest.approx(w * sl) for w, p, label, area, sl in rows)
