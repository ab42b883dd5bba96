"""README's SQL worked example, run as written: PNG folder -> object table -> PyTorch CNN -> labels."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

from tests.conftest import CliRunner

README = Path(__file__).resolve().parents[2] / "README.md"


def _worked_example() -> tuple[str, list[list[str]]]:
    """The example's SQL file and its `inferline sql` command lines, from the README."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Worked example") :]
    sql = re.search(r"```sql\n(.*?)```", section, re.S)
    bash = re.search(r"```bash\n(.*?)```", section, re.S)
    assert sql is not None and bash is not None
    commands = [
        shlex.split(line)[1:] for line in bash.group(1).splitlines() if line.startswith("inferline sql")
    ]
    return sql.group(1), commands


def test_readme_worked_example_runs(cli: CliRunner, project: Path, digits_example: Path) -> None:
    shutil.copytree(digits_example, project / "examples" / "digits")
    sql, commands = _worked_example()
    (project / "top_classes.sql").write_text(sql, encoding="utf-8")
    assert len(commands) == 3 and commands[0] == ["sql", "--db", "digits.duckdb", "-f", "top_classes.sql"]

    top = cli(*commands[0], "--format", "json")
    rows = [json.loads(line) for line in top.stdout.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2, 1, 2, 1, 2]
    best = [r for r in rows if r["rank"] == 1]
    assert all(r["name"] == "zero" and r["file"].startswith("0_") for r in best)
    assert all(r["probability"] > 0.5 for r in best)

    accuracy = cli(*commands[1], "--format", "json")
    assert json.loads(accuracy.stdout)["accuracy"] > 0.9
    # ML.EVALUATE over the same object table agrees with the hand-written accuracy.
    evaluation = json.loads(cli(*commands[2], "--format", "json").stdout)
    assert evaluation["accuracy"] == json.loads(accuracy.stdout)["accuracy"]
    assert 0.9 < evaluation["f1_score"] <= 1 and evaluation["log_loss"] > 0 and evaluation["roc_auc"] > 0.9
