"""Hooks, label maps, steps, `output:`, no-model pipelines and splits under `--runner beam`:
the same spec gives the same rows and dead letters as on the local engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import yaml

from inferline.engine.local import run_pipeline
from inferline.pipeline import load_spec
from tests.conftest import CliRunner
from tests.e2e.test_processing import prob_model  # noqa: F401 - the fixture

REPO = Path(__file__).resolve().parents[2]


def _both(
    cli: CliRunner, spec: dict[str, Any], out: str = "out", *, local_in_process: bool = False
) -> tuple[list[dict[str, Any]], ...]:
    """Run `spec` on each engine into Parquet; both runs' rows, sorted by key.

    `local_in_process`: the local engine runs in this process (~3 s CPU less than a CLI
    process); only for specs without hooks, whose modules this process would keep imported."""
    rows = []
    for runner in ("local", "beam"):
        path = f"{out}/{runner}.parquet"
        Path("p.yaml").write_text(yaml.safe_dump({**spec, "sink": {"kind": "parquet", "path": path}}))
        if runner == "local" and local_in_process:
            run_pipeline(load_spec("p.yaml"))
        else:
            cli("run", "p.yaml", "--runner", runner)
        rows.append(sorted(pq.read_table(path).to_pylist(), key=lambda r: str(r["key"])))
    return tuple(rows)


def test_the_prepared_example_gives_the_same_rows_on_beam(project: Path, cli: CliRunner) -> None:
    # Two SQL steps, a map step, a step after the model, a label map and a postprocess hook.
    for name in ("hooks.py", "prepared.yaml", "labels.txt"):
        (project / "examples/iris" / name).write_text((REPO / "examples/iris" / name).read_text())
    spec = yaml.safe_load(Path("examples/iris/prepared.yaml").read_text())
    local, beam = _both(cli, spec)
    assert beam == local
    assert 0 < len(beam) < 150 and all(r["prediction"] != 0 and r["sepal_width"] < 4 for r in beam)
    assert {"label", "petal_ratio", "sepal_area"} <= set(beam[0])


def test_top_k_labels_and_a_hook_column_on_beam(project: Path, prob_model: Path, cli: CliRunner) -> None:  # noqa: F811
    Path("labels.txt").write_text("setosa\nversicolor\nvirginica\n")
    spec = yaml.safe_load(Path("examples/iris/pipeline.yaml").read_text())
    spec["model"].update(
        uri="models/iris-*.joblib", labels="labels.txt", top_k=2, handler="my_hooks:TopLabels"
    )
    local, beam = _both(cli, spec)
    assert len(beam) == 150
    for got, want in zip(beam, local, strict=True):
        assert {k: got[k] for k in ("key", "prediction", "label", "top_labels", "top2", "model_id")} == {
            k: want[k] for k in ("key", "prediction", "label", "top_labels", "top2", "model_id")
        }
        assert np.allclose(got["top_scores"], want["top_scores"])
        assert got["top_labels"] == got["top2"]  # the hook and the label map agree


def test_a_hook_that_raises_dead_letters_only_its_batch_on_beam(
    project: Path,
    prob_model: Path,  # noqa: F811
    cli: CliRunner,
) -> None:
    spec = yaml.safe_load(Path("examples/iris/pipeline.yaml").read_text())
    spec["model"] = {"name": "iris", "uri": "models/iris-*.joblib", "handler": "my_hooks:Fussy"}
    spec.update(batch={"max_size": 10}, sink={"kind": "jsonl", "path": "beam.jsonl"})
    Path("p.yaml").write_text(yaml.safe_dump(spec))
    result = cli("run", "p.yaml", "--runner", "beam")
    dead = [json.loads(line) for line in Path("beam_errors.jsonl").read_text().splitlines()]
    predicted = [json.loads(line) for line in Path("beam.jsonl").read_text().splitlines()]
    # Beam forms the batches: the one holding row 42 is lost, no other.
    assert "42" in {d["key"] for d in dead} and 1 <= len(dead) <= 10
    assert f"{len(predicted)} predicted, {len(dead)} dead-lettered" in result.stdout
    assert len(predicted) + len(dead) == 150
    assert {d["stage"] for d in dead} == {"hook"}
    assert {d["error"] for d in dead} == {
        "model iris: hook my_hooks:Fussy.preprocess failed: ValueError: I do not like row 42"
    }


def test_a_model_less_split_is_the_same_on_both_engines(project: Path, cli: CliRunner) -> None:
    rng = np.random.default_rng(7)
    lines = ["id,x"] + [f"{i},{x:.4f}" for i, x in enumerate(rng.normal(size=1_000))]
    Path("small.csv").write_text("\n".join(lines) + "\n")
    spec = {
        "name": "prep",
        "source": {"kind": "csv", "path": "small.csv"},
        "key": "id",
        "steps": [{"sql": "SELECT id, x, x * x AS x2 FROM input WHERE x > -1"}],
        "output": {"id": "id", "square": "x2"},
    }
    sides = {}
    for runner in ("local", "beam"):
        sink = {"kind": "parquet", "path": f"{runner}", "split": {"train": 0.7, "eval": 0.3}}
        Path("p.yaml").write_text(yaml.safe_dump({**spec, "sink": sink}))
        if runner == "local":
            run_pipeline(load_spec("p.yaml"))  # in this process: a CLI process costs ~3 s CPU more
        else:
            cli("run", "p.yaml", "--runner", runner)
        sides[runner] = {
            side: sorted(pq.read_table(f"{runner}/{side}.parquet").to_pylist(), key=lambda r: r["id"])
            for side in ("train", "eval")
        }
    assert sides["beam"] == sides["local"]
    train, held = sides["beam"]["train"], sides["beam"]["eval"]
    assert set(train[0]) == {"key", "id", "square"}
    assert 0.65 < len(train) / (len(train) + len(held)) < 0.75


def test_several_models_side_by_side_on_beam(project: Path, cli: CliRunner) -> None:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    iris = load_iris()
    sepal = DecisionTreeClassifier(random_state=0).fit(iris.data[:, :2], iris.target)
    joblib.dump(sepal, "sepal-1.joblib")
    lines = Path("examples/iris/data/iris.csv").read_text().splitlines()
    header = lines[0].split(",")
    petal = header.index("petal_length")
    for i in (3, 50, 51, 120):  # a bad petal length: only the whole-flower model fails on these rows
        cells = lines[i + 1].split(",")
        cells[petal] = "oops"
        lines[i + 1] = ",".join(cells)
    Path("examples/iris/data/iris.csv").write_text("\n".join(lines) + "\n")
    spec = yaml.safe_load(Path("examples/iris/pipeline.yaml").read_text())
    whole = spec.pop("model")
    spec["models"] = [
        whole,
        {"name": "sepal", "uri": "sepal-*.joblib", "inputs": ["sepal_length", "sepal_width"]},
    ]
    local, beam = _both(cli, spec, local_in_process=True)
    assert beam == local and len(beam) == 150
    assert [r["key"] for r in beam if r["iris_prediction"] is None] == ["120", "3", "50", "51"]
    assert {(r["sepal_model_id"], r["sepal_prediction"] is not None) for r in beam} == {("sepal/1", True)}
    (recorded,) = [json.loads(line) for line in Path("out/inferline_runs.jsonl").read_text().splitlines()]
    assert recorded["runner"] == "beam/DirectRunner"
    assert recorded["model_ids"] == ["iris/1", "sepal/1"]
