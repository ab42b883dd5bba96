"""Outputs never replace a file of another kind (io/targets.py)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from inferline.errors import SinkError
from inferline.io.targets import check_not_input, check_output, check_run_outputs, identify, suggest
from inferline.pipeline import parse_spec


def _files(tmp_path: Path) -> dict[str, Path]:
    files = {
        "parquet": tmp_path / "a.parquet",
        "duckdb": tmp_path / "w.duckdb",
        "html": tmp_path / "r.html",
        "json": tmp_path / "p.jsonl",
        "text": tmp_path / "p.csv",
    }
    pq.write_table(pa.table({"key": ["a"]}), files["parquet"])
    with duckdb.connect(str(files["duckdb"])) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
    files["html"].write_text("\n<!doctype html>\n<html><body>hi</body></html>\n")
    files["json"].write_text('{"key": "a"}\n')
    files["text"].write_text('"key","prediction"\n"a",1\n')
    return files


def test_identify_reads_what_a_file_holds_not_its_name(tmp_path: Path) -> None:
    for kind, path in _files(tmp_path).items():
        moved = path.with_suffix("")  # the content decides, whatever the name
        path.rename(moved)
        assert identify(str(moved)) == kind
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "bin").write_bytes(b"\x00\x01\x02")
    assert identify(str(tmp_path / "empty")) is None
    assert identify(str(tmp_path / "missing")) is None
    assert identify(str(tmp_path / "bin")) == "binary"
    assert identify(str(tmp_path)) == "directory"
    (tmp_path / "xgb").write_text('{"learner": {"attributes": {}}, "version": [2, 1, 0]}')
    (tmp_path / "lgbm").write_text("tree\nversion=v4\nnum_class=1\n")
    assert identify(str(tmp_path / "xgb")) == identify(str(tmp_path / "lgbm")) == "model"
    with pytest.raises(SinkError, match=r"lgbm is a model file, not CSV output; refusing to replace it"):
        check_output(str(tmp_path / "lgbm"), "csv")


def test_each_output_may_replace_its_own_kind_of_file(tmp_path: Path) -> None:
    files = _files(tmp_path)
    check_output(str(files["parquet"]), "parquet")
    check_output(str(files["duckdb"]), "duckdb")
    check_output(str(files["html"]), "html", setting="-o {}")
    check_output(str(files["json"]), "jsonl")
    check_output(str(files["text"]), "csv")
    check_output(str(tmp_path / "new" / "out.parquet"), "parquet")
    check_output(str(tmp_path / "no_extension"), "csv")


@pytest.mark.parametrize(
    ("existing", "kind", "message"),
    [
        (
            "duckdb",
            "parquet",
            "w.duckdb is a DuckDB database, not Parquet output; refusing to replace it: "
            "pass --set sink.path={dir}/w.parquet (or remove the file)",
        ),
        (
            "parquet",
            "jsonl",
            "a.parquet is a Parquet file, not JSON Lines output; refusing to replace it: "
            "pass --set sink.path={dir}/a.jsonl (or remove the file)",
        ),
        (
            "json",
            "csv",
            "p.jsonl is a JSON file, not CSV output; refusing to replace it: "
            "pass --set sink.path={dir}/p.csv (or remove the file)",
        ),
        (
            "text",
            "duckdb",
            "p.csv is a text file, not a DuckDB database; refusing to replace it: "
            "pass --set sink.path={dir}/p.duckdb (or remove the file)",
        ),
        (
            "duckdb",
            "html",
            "w.duckdb is a DuckDB database, not an HTML report; refusing to replace it: "
            "pass --set sink.path={dir}/w.html (or remove the file)",
        ),
    ],
)
def test_another_kind_of_file_is_refused_in_one_line(
    tmp_path: Path, existing: str, kind: str, message: str
) -> None:
    path = _files(tmp_path)[existing]
    before = path.read_bytes()
    with pytest.raises(SinkError) as info:
        check_output(str(path), kind)
    assert str(info.value) == f"{tmp_path}/" + message.format(dir=tmp_path)
    assert path.read_bytes() == before


def test_a_name_that_says_another_kind_is_refused_even_before_the_file_exists(tmp_path: Path) -> None:
    with pytest.raises(
        SinkError,
        match=r"^w\.duckdb is named like a DuckDB database, not Parquet output: "
        r"pass --set sink\.path=w\.parquet$",
    ):
        check_output("w.duckdb", "parquet")
    onnx = r"^m\.onnx is named like an ONNX model, not an HTML report: pass -o m\.html$"
    with pytest.raises(SinkError, match=onnx):
        check_output("m.onnx", "html", setting="-o {}")
    # Remote URIs are not inspected.
    check_output("s3://bucket/w.duckdb", "parquet")


def test_suggestions_keep_the_folder_and_never_repeat_the_path() -> None:
    assert suggest("out/warehouse.duckdb", "parquet") == "out/warehouse.parquet"
    assert suggest("out/results", "csv") == "out/results.csv"
    assert suggest("out/a.parquet", "parquet") == "out/predictions.parquet"


def test_an_input_of_the_run_is_never_an_output(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_text("a\n1\n")
    with pytest.raises(
        SinkError,
        match=r"data\.csv is an input of this run; refusing to replace it: "
        r"pass --set dead_letter=ANOTHER_PATH$",
    ):
        check_not_input(str(data), [str(data)], setting="--set dead_letter={}")
    check_not_input(str(tmp_path / "other.csv"), [str(data)])


def test_dead_letters_may_not_share_the_sinks_file(tmp_path: Path) -> None:
    spec = parse_spec(
        {
            "source": {"kind": "csv", "path": str(tmp_path / "*.csv")},
            "sink": {"kind": "jsonl", "path": str(tmp_path / "out.jsonl")},
            "dead_letter": str(tmp_path / "out.jsonl"),
        }
    )
    with pytest.raises(SinkError, match=r"out\.jsonl is also the sink's path; pass --set dead_letter="):
        check_run_outputs(spec)
