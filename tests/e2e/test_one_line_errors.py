"""The first-hour mistakes end in one line saying what to do: a missing extra, a DuckDB file
another process holds, a port already served on."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import duckdb
import httpx

from tests.conftest import CliRunner, subprocess_env
from tests.e2e.server import running_server

# The ONNX iris model where the model is not the point: unpickling the .joblib imports
# scikit-learn, ~1.5 s CPU of each process.
ONNX = ["--set", "model.uri=examples/iris/models/iris-*.onnx"]

BLOCK_SQLGLOT = '''
import sys


class BlockSqlglot:
    """As if the `sql` extra were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name == "sqlglot" or name.startswith("sqlglot."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, BlockSqlglot())
'''


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_sql_without_the_sql_extra_names_it(cli: CliRunner, tmp_path: Path) -> None:
    shim = tmp_path / "no-sqlglot"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(BLOCK_SQLGLOT, encoding="utf-8")
    result = cli("sql", "SELECT 42 AS answer", check=False, env={"PYTHONPATH": str(shim)})
    assert one_line(result) == "error: sqlglot is not installed: pip install 'inferline[sql]'"
    assert result.stdout == ""


def test_a_duckdb_file_held_by_another_process_names_it(cli: CliRunner, project: Path) -> None:
    cli("run", "examples/iris/pipeline.yaml", *ONNX)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; con = duckdb.connect('warehouse.duckdb'); print('holding', flush=True); "
            "sys.stdin.read()",
        ],
        cwd=project,
        env=subprocess_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        expected = re.compile(
            rf"error: warehouse\.duckdb: in use by another process \(PID {holder.pid}, [^)]*python[^)]*\); "
            r"DuckDB lets no other process open a file while one has it open for writing: .*"
            r'see README "Reading the warehouse while a pipeline runs"'
        )
        for args in (
            ("report", "iris_predictions", "--db", "warehouse.duckdb", "-o", "report.html"),
            ("sql", "--db", "warehouse.duckdb", "SELECT count(*) FROM iris_predictions"),
            ("run", "examples/iris/pipeline.yaml", *ONNX),
        ):
            line = one_line(cli(*args, check=False))
            assert expected.fullmatch(line), line
        assert not (project / "report.html").exists()
    finally:
        holder.communicate("", timeout=30)
    # The README's section exists, and nothing was lost: the table and its run are all there.
    assert "### Reading the warehouse while a pipeline runs" in (
        Path(__file__).resolve().parents[2] / "README.md"
    ).read_text(encoding="utf-8")
    with duckdb.connect(str(project / "warehouse.duckdb"), read_only=True) as con:
        assert con.sql("SELECT count(DISTINCT key) FROM iris_predictions").fetchall() == [(150,)]
        assert con.sql("SELECT status FROM inferline_runs").fetchall() == [("ok",)]


def test_a_second_server_on_a_busy_port_says_so_before_announcing(cli: CliRunner, project: Path) -> None:
    cli("models", "add", "iris", "examples/iris/models/iris-1.onnx")
    store = project / "model_store"
    with running_server(store) as base:
        port = base.rsplit(":", 1)[1]
        second = cli("serve", "--models", str(store), "--port", port, check=False, timeout=60)
        assert one_line(second) == (
            f"error: serve: port {port} on 127.0.0.1 is already in use (another inferline serve?); "
            f"stop that process or pass --port with a free port, e.g. --port {int(port) + 1}"
        )
        assert "serving" not in second.stdout + second.stderr
        answer = httpx.post(f"{base}/predictions/iris", json=[5.1, 3.5, 1.4, 0.2], timeout=30)
        assert answer.json()["predictions"] == [0]  # the first server is untouched
