"""What some README commands must print or write beyond the key line of their EXPECTED_OUTPUT
rule, checked on the README test's own run (one run per command, instead of a second test that
runs the same commands again).

A check takes the command's stdout, the project directory and `notes` (what earlier checks
recorded) and returns what is wrong, or None.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import duckdb

Notes = dict[str, object]
Check = Callable[[str, Path, Notes], "str | None"]


def sql_table(stdout: str) -> list[dict[str, str]]:
    """The rows of the table `inferline sql` prints (rich's box drawing), as text by column."""
    header: list[str] = []
    rows: list[dict[str, str]] = []
    for line in stdout.splitlines():
        if line.startswith("┃"):
            header = [cell.strip() for cell in line.strip("┃").split("┃")]
        elif line.startswith("│"):
            rows.append(dict(zip(header, (c.strip() for c in line.strip("│").split("│")), strict=True)))
    return rows


def top_two_classes(stdout: str, project: Path, notes: Notes) -> str | None:
    """top_classes.sql: the first three images (all zeros) with their two likeliest classes."""
    rows = sql_table(stdout)
    if [r.get("rank") for r in rows] != ["1", "2"] * 3:
        return f"expected ranks 1, 2 for three images, got {rows}"
    best = rows[::2]
    if not all(
        r["name"] == "zero" and r["file"].startswith("0_") and float(r["probability"]) > 0.5 for r in best
    ):
        return f"expected the zeros' first class to be 'zero' with probability > 0.5, got {best}"
    return None


def hand_accuracy(stdout: str, project: Path, notes: Notes) -> str | None:
    rows = sql_table(stdout)
    if len(rows) != 1 or not float(rows[0]["accuracy"]) > 0.9:
        return f"expected one accuracy above 0.9, got {rows}"
    notes["digits accuracy"] = rows[0]["accuracy"]
    return None


def evaluation(stdout: str, project: Path, notes: Notes) -> str | None:
    """ML.EVALUATE over the object table agrees with the hand-written accuracy before it."""
    rows = sql_table(stdout)
    if len(rows) != 1:
        return f"expected one row of metrics, got {rows}"
    metrics = {name: float(value) for name, value in rows[0].items()}
    if rows[0]["accuracy"] != notes.get("digits accuracy"):
        return f"accuracy {rows[0]['accuracy']} differs from the hand-written {notes.get('digits accuracy')}"
    if not (0.9 < metrics["f1_score"] <= 1 and metrics["log_loss"] > 0 and metrics["roc_auc"] > 0.9):
        return f"expected f1_score in (0.9, 1], log_loss > 0, roc_auc > 0.9, got {metrics}"
    return None


def prepared_rows(stdout: str, project: Path, notes: Notes) -> str | None:
    return prepared_problem(project / "warehouse.duckdb", "iris_prepared")


def prepared_problem(warehouse: Path, table: str) -> str | None:
    """What is wrong with the rows examples/iris/prepared.yaml (or the README's hook) wrote."""
    with duckdb.connect(str(warehouse), read_only=True) as con:
        rows = con.sql(
            "SELECT prediction, label, top_labels, top2, top_scores, sepal_area, petal_ratio, sepal_width "
            f"FROM {table}"
        ).fetchall()
    names = ["setosa", "versicolor", "virginica"]
    if len(rows) != 100:  # the steps keep sepal_width < 4 and prediction <> 0
        return f"{table}: expected 100 rows, got {len(rows)}"
    for row in rows:
        prediction, label, top_labels, top2, top_scores, area, ratio, width = row
        if not (
            prediction != 0
            and width < 4
            and area is not None
            and ratio is not None
            and label == names[prediction] == top_labels[0]
            and top2 == top_labels
            and len(top2) == 2
            and top_scores[0] >= top_scores[1]
            and 0.0 <= sum(top_scores) <= 1.0 + 1e-9
        ):
            return f"{table}: a row the steps and hook did not make: {row}"
    return None


CHECKS: tuple[tuple[str, Check], ...] = (
    (r"-f top_classes\.sql$", top_two_classes),
    (r"\) AS accuracy FROM ML\.PREDICT\(MODEL ds\.digits", hand_accuracy),
    (r"FROM ML\.EVALUATE\(MODEL ds\.digits", evaluation),
    (r"^inferline run examples/iris/prepared\.yaml$", prepared_rows),
)


def check(command: str, stdout: str, project: Path, notes: Notes) -> str | None:
    """What the checks matching `command` (as the README writes it) find wrong, or None."""
    for pattern, function in CHECKS:
        if re.search(pattern, command):
            problem = function(stdout, project, notes)
            if problem is not None:
                return problem
    return None
