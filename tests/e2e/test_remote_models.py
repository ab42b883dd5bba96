"""Several models over one source: a local sklearn model next to a remote one on a real `inferline serve`."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import joblib
import numpy as np
import pytest
import yaml
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from inferline.engine.local import LocalEngine, RunStats
from inferline.examples.iris import FEATURES
from inferline.models.store import ModelStore
from inferline.pipeline import parse_spec
from tests.conftest import CliRunner
from tests.e2e.server import server_process

SECRET = "tok-9f8e7d6c5b4a-do-not-leak"
IRIS = load_iris()


@pytest.fixture(scope="module")
def lr_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding `lr`, a logistic regression (a different model from the local SVC)."""
    root = tmp_path_factory.mktemp("remote")
    model = LogisticRegression(max_iter=500).fit(IRIS.data, IRIS.target)
    joblib.dump(model, root / "lr.joblib")
    ModelStore(str(root / "store")).add("lr", str(root / "lr.joblib"), inputs=FEATURES)
    return root / "store"


@pytest.fixture(scope="module")
def lr_server(lr_store: Path) -> Iterator[str]:
    """One server for the tests that do not stop it; its log is `server-PORT.log` by the store."""
    with server_process(lr_store) as (_, base):
        yield base


def kill(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def spec_for(base: str, *, max_size: int = 4096, auth: bool = False, retries: int = 3) -> dict[str, Any]:
    remote: dict[str, Any] = {
        "name": "lr",
        "framework": "remote",
        "url": f"{base}/v2/models/lr",
        "inputs": FEATURES,
        "timeout": 5,
        "retries": retries,
    }
    if auth:
        remote["auth_env"] = "LR_TOKEN"
    return {
        "name": "compare",
        "source": {"kind": "csv", "path": "examples/iris/data/iris.csv"},
        "models": [
            {"name": "svc", "uri": "examples/iris/models/iris-*.joblib", "inputs": FEATURES},
            remote,
            {"name": "ts", "url": f"{base}/predictions/lr", "inputs": FEATURES},
        ],
        "key": "id",
        "sink": {"kind": "duckdb", "path": "out.duckdb", "table": "answers"},
        "batch": {"max_size": max_size},
    }


def rows_of(path: str, query: str) -> list[dict[str, Any]]:
    with duckdb.connect(path, read_only=True) as con:
        table = con.sql(query).to_arrow_table()
    return table.to_pylist()


def test_local_and_remote_models_side_by_side(
    cli: CliRunner, project: Path, lr_store: Path, lr_server: str
) -> None:
    svc = joblib.load(project / "examples/iris/models/iris-1.joblib")
    lr = joblib.load(lr_store.parent / "lr.joblib")
    base = lr_server
    (project / "compare.yaml").write_text(yaml.safe_dump(spec_for(base, max_size=40, auth=True)))
    result = cli("run", "compare.yaml", env={"LR_TOKEN": SECRET})
    log = (lr_store.parent / f"server-{base.rsplit(':', 1)[1]}.log").read_bytes().decode()
    rows = rows_of("out.duckdb", "SELECT * FROM answers ORDER BY CAST(key AS INT)")
    assert len(rows) == 150
    data = IRIS.data
    assert [r["svc_prediction"] for r in rows] == svc.predict(data).tolist()
    assert [r["lr_prediction"] for r in rows] == lr.predict(data).tolist()
    assert [r["ts_prediction"] for r in rows] == lr.predict(data).tolist()
    np.testing.assert_allclose([r["lr_scores"] for r in rows], lr.predict_proba(data), rtol=1e-9)
    assert {r["svc_model_id"] for r in rows} == {"svc/1"}
    assert {r["lr_model_id"] for r in rows} == {"lr/1"}  # the version the server reports
    assert {r["ts_model_id"] for r in rows} == {"ts/1"}
    # The secret travels only in the Authorization header: not in logs, outputs or tables.
    with duckdb.connect("out.duckdb", read_only=True) as con:
        tables = [t for (t,) in con.sql("SELECT table_name FROM information_schema.tables").fetchall()]
        dumped = json.dumps(
            [con.sql(f"SELECT * FROM {t}").to_arrow_table().to_pylist() for t in tables], default=str
        )
    for text in (result.stdout, result.stderr, log, dumped, (project / "compare.yaml").read_text()):
        assert SECRET not in text


def test_server_stopped_mid_run(project: Path, lr_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = joblib.load(project / "examples/iris/models/iris-1.joblib")
    lr = joblib.load(lr_store.parent / "lr.joblib")
    with server_process(lr_store) as (proc, base):
        monkeypatch.setenv("LR_TOKEN", SECRET)
        raw = spec_for(base, max_size=10, retries=1, auth=True)
        raw["models"] = raw["models"][:2]
        spec = parse_spec(raw)

        def progress(stats: RunStats) -> None:
            if stats.rows_read >= 30 and proc.poll() is None:
                kill(proc)  # the server dies after 3 batches are committed

        started = time.monotonic()
        summary = LocalEngine(spec, queue_depth=1, workers=1, on_progress=progress).run()
        elapsed = time.monotonic() - started
    rows = rows_of("out.duckdb", "SELECT * FROM answers ORDER BY CAST(key AS INT)")
    dead = rows_of("out.duckdb", "SELECT * FROM answers_errors ORDER BY CAST(key AS INT)")
    # Every local answer lands; the remote answers stop when the server does.
    assert len(rows) == 150 and summary.rows_read == 150
    assert [r["svc_prediction"] for r in rows] == svc.predict(IRIS.data).tolist()
    answered = [i for i, r in enumerate(rows) if r["lr_prediction"] is not None]
    missing = [str(i) for i, r in enumerate(rows) if r["lr_prediction"] is None]
    assert 30 <= len(answered) <= 80 and answered == list(range(len(answered)))
    assert [rows[i]["lr_prediction"] for i in answered] == lr.predict(IRIS.data[answered]).tolist()
    assert all(r["lr_model_id"] is None for r in rows if r["lr_prediction"] is None)
    # Each missing remote answer is a dead letter for the remote model only, naming the URL.
    assert [d["key"] for d in dead] == missing
    assert {d["model_id"] for d in dead} == {"lr/1"} and {d["stage"] for d in dead} == {"predict"}
    error = dead[0]["error"]
    assert error.startswith(f"model lr/1: POST {base}/v2/models/lr/infer failed")
    assert error.endswith("cannot connect (ConnectError)")
    assert SECRET not in json.dumps([rows, dead], default=str)
    # A dead server is not retried row by row: the whole run stays quick.
    assert elapsed < 20


def test_sql_remote_model_uses_the_remote_handler(iris_example: Path, lr_store: Path, lr_server: str) -> None:
    import inferline.sql
    from inferline.errors import SqlError

    lr = joblib.load(lr_store.parent / "lr.joblib")
    csv = iris_example / "data" / "iris.csv"
    base = lr_server
    with inferline.sql.connect() as con:
        os.environ["LR_SQL_TOKEN"] = SECRET
        try:
            con.sql(
                f"CREATE TABLE flowers AS SELECT * FROM read_csv('{csv}');"
                "CREATE MODEL ds.lr REMOTE WITH CONNECTION `proj.us.inference` "
                f"OPTIONS(endpoint='{base}/v2/models/lr', auth_env='LR_SQL_TOKEN');"
                "CREATE MODEL ds.lr_ts REMOTE WITH CONNECTION us.inference "
                f"OPTIONS(endpoint='{base}/predictions/lr')"
            )
            query = "SELECT * FROM ML.PREDICT(MODEL {}, (SELECT * EXCLUDE (target) FROM flowers)) ORDER BY id"
            table = con.sql(query.format("ds.lr")).to_arrow_table()
            served = con.sql(query.format("ds.lr_ts")).to_arrow_table()
        finally:
            del os.environ["LR_SQL_TOKEN"]
        assert table.column_names[:2] == ["predicted_label", "probabilities"]
        assert table.column("predicted_label").to_pylist() == lr.predict(IRIS.data).tolist()
        np.testing.assert_allclose(table.column("probabilities").to_pylist(), lr.predict_proba(IRIS.data))
        assert served.column("predicted_label").to_pylist() == lr.predict(IRIS.data).tolist()
        assert SECRET not in json.dumps(con.sql("SELECT * FROM inferline_models").fetchall(), default=str)
        with pytest.raises(
            SqlError,
            match=r"CREATE MODEL ds.bad: needs OPTIONS\(endpoint=...\); a remote model "
            r"takes OPTIONS\(endpoint='http://host:port/v2/models/NAME'",
        ):
            con.sql("CREATE MODEL ds.bad REMOTE WITH CONNECTION c OPTIONS(auth_env='X')")
        with pytest.raises(
            SqlError, match=r"CREATE MODEL ds.bad: option 'model_path' is not supported; a remote"
        ):
            con.sql(
                "CREATE MODEL ds.bad REMOTE WITH CONNECTION c "
                "OPTIONS(endpoint='http://h/v2/models/m', model_path='x')"
            )
        with pytest.raises(
            SqlError, match=r"CREATE MODEL ds.bad: model http://h/x: cannot tell the protocol"
        ):
            con.sql("CREATE MODEL ds.bad REMOTE WITH CONNECTION c OPTIONS(endpoint='http://h/x')")
