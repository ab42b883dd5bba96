"""`inferline quickstart` in an empty folder, as a new user runs it: --root, the run history,
the preview's order, and the README's prepared example with its hook and label map."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import yaml

from tests.conftest import subprocess_env
from tests.e2e.readme_checks import prepared_problem

REPO = Path(__file__).resolve().parents[2]


def inferline(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "inferline", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=subprocess_env({"COLUMNS": "200"}),
    )
    assert result.returncode == 0, f"inferline {' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result


def query(path: Path, sql: str) -> list[tuple[object, ...]]:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.sql(sql).fetchall()


def test_quickstart_root_builds_and_runs_there(tmp_path: Path) -> None:
    result = inferline(tmp_path, "quickstart", "--root", "my demo")
    example = tmp_path / "my demo" / "iris"
    assert {p.name for p in (example / "models").iterdir()} == {
        "iris-1.joblib",
        "iris-1.onnx",
        "iris_proba-1.joblib",
    }
    assert not (tmp_path / "examples").exists()
    spec = yaml.safe_load((example / "pipeline.yaml").read_text(encoding="utf-8"))
    assert spec["source"]["path"] == "my demo/iris/data/*.csv"
    assert spec["model"]["uri"] == "my demo/iris/models/iris-*.joblib"
    # The preview lists the first keys in numeric order: 0, 1, 2, 3, 4 (not 0, 1, 10, 100, 101).
    keys = re.findall(r"^│ (\d+)\s+│", result.stdout, flags=re.M)
    assert keys == ["0", "1", "2", "3", "4"], result.stdout
    warehouse = tmp_path / "warehouse.duckdb"
    assert query(warehouse, "SELECT count(DISTINCT key) FROM iris_predictions") == [(150,)]
    assert query(warehouse, "SELECT pipeline, status, rows_read FROM inferline_runs") == [
        ("iris-batch", "ok", 150)
    ]
    again = inferline(tmp_path, "run", "my demo/iris/pipeline.yaml")
    assert "150 rows read, 150 predicted" in again.stdout


def test_quickstart_digits_records_its_run(tmp_path: Path, digits_example: Path) -> None:
    # The trained model and images of the session's example: quickstart reuses what is there.
    example = tmp_path / "demo" / "digits"
    shutil.copytree(digits_example / "images", example / "images")
    shutil.copytree(digits_example / "models", example / "models")
    images = len(list((example / "images").glob("*.png")))
    result = inferline(tmp_path, "quickstart", "digits", "--root", "demo")
    assert "accuracy" in result.stdout
    spec = yaml.safe_load((example / "pipeline.yaml").read_text(encoding="utf-8"))
    assert spec["source"]["path"] == "demo/digits/images/*.png"
    warehouse = tmp_path / "warehouse.duckdb"
    assert query(warehouse, "SELECT count(*) FROM digits_predictions") == [(images,)]
    assert query(warehouse, "SELECT pipeline, status, rows_read, rows_predicted FROM inferline_runs") == [
        ("digits", "ok", images, images)
    ]


def readme_yaml_of_the_prepared_example() -> dict[str, object]:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n(name: iris-prepared\n.*?)```", readme, flags=re.S)
    assert block is not None
    parsed: dict[str, object] = yaml.safe_load(block.group(1))
    return parsed


def readme_hook_code() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```python\n(\s*import numpy as np\n\s*class TopLabels:.*?)```", readme, flags=re.S)
    assert block is not None
    return block.group(1)


def test_the_readme_prepared_example_and_hook_run_on_the_quickstart_model(
    tmp_path: Path, iris_example: Path
) -> None:
    # examples/ as checked out, with the data and models `inferline quickstart` builds (the
    # session's iris example); the README test runs examples/iris/prepared.yaml itself and checks
    # its rows (readme_checks.prepared_rows), so this runs only the README's hook.
    shutil.copytree(REPO / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    for built in ("data", "models"):
        # A clone where `inferline quickstart` already ran (the README's first command) has them.
        shutil.copytree(iris_example / built, tmp_path / "examples" / "iris" / built, dirs_exist_ok=True)
    prepared = tmp_path / "examples" / "iris" / "prepared.yaml"
    spec = yaml.safe_load(prepared.read_text(encoding="utf-8"))
    assert spec == readme_yaml_of_the_prepared_example()
    # The hook exactly as the README prints it, in place of hooks.py's.
    (tmp_path / "readme_hooks.py").write_text(textwrap.dedent(readme_hook_code()), encoding="utf-8")
    spec["model"]["handler"] = "readme_hooks:TopLabels"
    spec["sink"]["table"] = "iris_readme_hook"
    (tmp_path / "readme.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    result = inferline(tmp_path, "run", "readme.yaml")
    assert " 0 dead-lettered" in result.stdout
    problem = prepared_problem(tmp_path / "warehouse.duckdb", "iris_readme_hook")
    assert problem is None, problem
