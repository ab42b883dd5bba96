"""load_report reads counts and metrics from a known table; bad names give one clear line."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from inferline.errors import InputError
from inferline.report.data import load_report
from tests.animals import AGREEMENT, CONFUSION, LABELS, write_animals_db


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = str(tmp_path / "zoo.duckdb")
    write_animals_db(path)
    return path


def test_counts_versions_and_dead_letters(db: str) -> None:
    data = load_report("animals", db=db)
    assert data.rows == 10
    assert data.class_counts == {"bird": 1, "cat": 5, "dog": 4}
    assert data.model_versions == [("animals/1", 6), ("animals/2", 4)]
    assert data.dead_letters == 2
    assert data.evaluation is None and data.comparison is None and data.runs == []


def test_label_gives_the_hand_computed_confusion(db: str) -> None:
    data = load_report("animals", db=db, label="truth")
    assert data.evaluation is not None
    assert data.evaluation.labels == LABELS
    np.testing.assert_array_equal(data.evaluation.matrix, CONFUSION)
    assert data.evaluation.accuracy == pytest.approx(6 / 9)
    assert data.unlabelled == 1


def test_a_streams_part_directory_is_read_as_one_table(db: str, tmp_path: Path) -> None:
    import duckdb

    # A stream's Parquet sink: parts in a directory, the second with `scores` (a new model),
    # beside a part never committed (a killed run's) that must not be read.
    out = tmp_path / "animals.parquet"
    out.mkdir()
    with duckdb.connect(db, read_only=True) as con:
        con.execute(f"COPY (SELECT * FROM animals ORDER BY key LIMIT 4) TO '{out}/part-000001.parquet'")
        con.execute(
            "COPY (SELECT *, [0.5, 0.5] AS scores FROM animals ORDER BY key OFFSET 4) "
            f"TO '{out}/part-000002.parquet'"
        )
    (out / ".part-000003.parquet.partial").write_bytes(b"PAR1 cut short")
    data = load_report(str(out) + "/", label="truth")
    assert data.rows == 10 and data.class_counts == {"bird": 1, "cat": 5, "dog": 4}
    assert data.evaluation is not None and data.evaluation.correct == 6
    empty = tmp_path / "empty.jsonl"
    empty.mkdir()
    with pytest.raises(InputError, match=r"^report: .*empty.jsonl: no part files committed yet"):
        load_report(str(empty))


@pytest.mark.parametrize("compare", ["other", "animals_v2", "animals_v2.prediction"])
def test_compare_with_a_column_or_a_table_joined_on_key(db: str, compare: str) -> None:
    data = load_report("animals", db=db, label="truth", compare=compare)
    comp = data.comparison
    assert comp is not None
    np.testing.assert_array_equal(comp.confusion.matrix, AGREEMENT)
    assert comp.confusion.accuracy == pytest.approx(0.7)
    assert comp.accuracy == pytest.approx(7 / 9)
    assert ("joined on key" in comp.how) == (compare != "other")


def test_a_parquet_file_is_read_without_a_database(db: str, tmp_path: Path) -> None:
    import duckdb

    out = tmp_path / "animals.parquet"
    with duckdb.connect(db, read_only=True) as con:
        con.execute(f"COPY animals TO '{out}' (FORMAT parquet)")
    data = load_report(str(out), label="truth", compare="other")
    assert data.class_counts == {"bird": 1, "cat": 5, "dog": 4}
    assert data.evaluation is not None and data.evaluation.correct == 6
    assert data.dead_letters is None


def test_a_parquet_sinks_later_files_are_read_too(db: str, tmp_path: Path) -> None:
    import duckdb

    # A new model wrote `scores` halfway: the sink went on in animals.schema-2.parquet.
    out = tmp_path / "animals.parquet"
    with duckdb.connect(db, read_only=True) as con:
        con.execute(f"COPY (SELECT * FROM animals ORDER BY key LIMIT 4) TO '{out}' (FORMAT parquet)")
        con.execute(
            "COPY (SELECT *, [0.5, 0.5] AS scores FROM animals ORDER BY key OFFSET 4) "
            f"TO '{tmp_path / 'animals.schema-2.parquet'}' (FORMAT parquet)"
        )
    data = load_report(str(out), label="truth")
    assert data.rows == 10 and data.class_counts == {"bird": 1, "cat": 5, "dog": 4}
    assert data.evaluation is not None and data.evaluation.correct == 6


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"table": "animals", "db": "nope.duckdb"},
            "report: nope.duckdb: DuckDB database not found; give the sink",
        ),
        ({"table": "zebras"}, "no table 'zebras' (tables: animals, animals_errors, animals_v2, keyless)"),
        (
            {"table": "animals", "label": "target"},
            "table animals: no column 'target' for --label (columns: key,",
        ),
        ({"table": "animals", "prediction": "pred"}, "no column 'pred' for --prediction"),
        ({"table": "animals", "compare": "v9"}, "--compare 'v9' is neither a column of animals nor a table"),
        ({"table": "animals", "compare": "animals_v2.score"}, "animals_v2 has no column 'score'"),
        ({"table": "animals", "compare": "keyless"}, "--compare needs a 'key' column in keyless"),
    ],
)
def test_errors_name_the_place_and_the_choices(db: str, kwargs: dict[str, str], message: str) -> None:
    kwargs.setdefault("db", db)
    with pytest.raises(InputError, match=re.escape(message)):
        load_report(**kwargs)  # type: ignore[arg-type]


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(
        InputError, match=r"report: 'animals' is not a \.parquet/\.jsonl/\.csv file; for a DuckDB"
    ):
        load_report("animals")
    with pytest.raises(InputError, match=r"missing\.parquet: file not found"):
        load_report(str(tmp_path / "missing.parquet"))
