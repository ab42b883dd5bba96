"""Each bad input row is dead-lettered exactly once, also when the CSV reader re-reads a file
(a non-number in a model input column after the first block) (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from tests.conftest import CliRunner

HEADER = "id,sepal_length,sepal_width,petal_length,petal_width,target\n"


def _write_csv(path: Path, rows: int, *, extra_column_at: list[int], bad_float_at: int) -> None:
    # ~1.4 MB: the bad float lies beyond the reader's first 1 MiB block (inferred as double),
    # the extra-column lines before it, so the file is read twice.
    lines = [HEADER]
    for i in range(rows):
        if i in extra_column_at:
            lines.append("7,5.1,3.5,1.4,0.2,0,EXTRA\n")  # identical lines: told apart by count
        elif i == bad_float_at:
            lines.append(f"{i},oops,3.5,1.4,0.2,0\n")
        else:
            lines.append(f"{i},5.1,3.5,1.4,0.2,0\n")
    path.write_text("".join(lines))


def test_a_reread_csv_dead_letters_each_bad_line_once(project: Path, cli: CliRunner) -> None:
    _write_csv(Path("big.csv"), 60_000, extra_column_at=[100, 30_000], bad_float_at=55_000)
    result = cli(
        "run",
        "examples/iris/pipeline.yaml",
        "--no-progress",
        "--set",
        "source.path=big.csv",
        "--set",
        "sink.kind=parquet",
        "--set",
        "sink.path=out/p.parquet",
    )
    assert "60,000 rows read, 59,997 predicted, 3 dead-lettered" in result.stdout
    errors = [json.loads(line) for line in Path("out/p_errors.jsonl").read_text().splitlines()]
    assert len(errors) == 3 and len({e["key"] for e in errors}) == 3
    assert sorted(e["raw"] for e in errors if e["stage"] == "parse") == ["7,5.1,3.5,1.4,0.2,0,EXTRA"] * 2
    assert [e["key"] for e in errors if e["stage"] != "parse"] == ["55000"]
    table = pq.read_table("out/p.parquet")
    assert table.num_rows == 59_997 and len(set(table["key"].to_pylist())) == 59_997
    (run,) = [json.loads(line) for line in Path("out/inferline_runs.jsonl").read_text().splitlines()]
    assert (run["rows_read"], run["rows_predicted"], run["rows_dead"]) == (60_000, 59_997, 3)
