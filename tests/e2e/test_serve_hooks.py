"""The server runs a model's hooks and label map from its store metadata, like the engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from tests.conftest import CliRunner
from tests.e2e.server import running_server

HOOKS = '''
import numpy as np
import pytest

class Centimetres:
    """preprocess: instances arrive in millimetres; postprocess: the two best class names."""
    names = ["setosa", "versicolor", "virginica"]

    def setup(self, model):
        self.classes = list(model.classes_)

    def preprocess(self, batch, parameters):
        return np.stack(batch.column("mm").to_pylist()) / parameters.get("per_cm", 10.0)

    def postprocess(self, batch, outputs):
        order = np.argsort(-outputs.scores, axis=1)[:, :2]
        return {"top2": [[self.names[self.classes[i]] for i in row] for row in order],
                "ids": batch.column("id").to_pylist()}
'''


def test_predictions_route_runs_preprocess_postprocess_and_labels(project: Path, cli: CliRunner) -> None:
    iris = load_iris()
    model = LogisticRegression(max_iter=500).fit(iris.data, iris.target)
    joblib.dump(model, project / "iris.joblib")
    (project / "serve_hooks.py").write_text(HOOKS)
    (project / "labels.txt").write_text("setosa\nversicolor\nvirginica\n")
    cli(
        "models",
        "add",
        "iris",
        "iris.joblib",
        "--store",
        "store",
        "--meta",
        "handler=serve_hooks:Centimetres",
        "--meta",
        f"labels={project / 'labels.txt'}",
        "--meta",
        "top_k=2",
    )
    rows = iris.data[::15]
    instances = [{"id": i, "mm": (row * 10).tolist()} for i, row in enumerate(rows)]
    with running_server(project / "store", env={"PYTHONPATH": str(project)}) as base:
        answer = httpx.post(f"{base}/predictions/iris", json={"instances": instances}, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        broken = httpx.post(f"{base}/predictions/iris", json={"instances": [{"id": 1, "cm": [1, 2, 3, 4]}]})
        v2 = v2_answer(base, rows)
    probs = model.predict_proba(rows)
    names = np.array(["setosa", "versicolor", "virginica"])
    assert body["predictions"] == model.predict(rows).tolist()
    assert body["label"] == names[model.predict(rows)].tolist()
    assert body["top2"] == [names[np.argsort(-p)[:2]].tolist() for p in probs]
    assert body["top_labels"] == body["top2"]
    np.testing.assert_allclose(body["top_scores"], np.sort(probs, axis=1)[:, ::-1][:, :2])
    assert body["ids"] == list(range(len(rows)))
    # v2 (tritonclient, binary): the same hooks, given the request's parameters, add output tensors.
    assert v2.as_numpy("predictions").tolist() == body["predictions"]
    assert [v.decode() for v in v2.as_numpy("label")] == body["label"]
    assert [[v.decode() for v in row] for row in v2.as_numpy("top2")] == body["top2"]
    np.testing.assert_allclose(v2.as_numpy("top_scores"), body["top_scores"])
    assert v2.as_numpy("ids").tolist() == body["ids"]
    assert broken.status_code == 500
    assert broken.json()["type"] == "HookError"
    assert "hook serve_hooks:Centimetres.preprocess failed: KeyError" in broken.json()["message"]


def v2_answer(base: str, rows: np.ndarray) -> Any:
    """Infer over v2 REST with tensors named as the hook reads them, in 0.1 mm (per_cm=100)."""
    httpclient = pytest.importorskip("tritonclient.http")
    client = httpclient.InferenceServerClient(base.removeprefix("http://"))
    mm = httpclient.InferInput("mm", [len(rows), 4], "FP64")
    mm.set_data_from_numpy(rows * 100)
    ids = httpclient.InferInput("id", [len(rows)], "INT64")
    ids.set_data_from_numpy(np.arange(len(rows), dtype=np.int64))
    return client.infer("iris", [mm, ids], parameters={"per_cm": 100})
