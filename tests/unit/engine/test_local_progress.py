"""Progress follows rows written, for every source that knows its size (issue 15).

The engine reports `progress_done` of `progress_total` after each written batch; these tests
check it against where the written rows really end in the input, not the reader's read-ahead.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from inferline.engine.local import LocalEngine, RunStats
from inferline.pipeline import parse_spec

Event = tuple[int, int, int | None]


def _run(tmp_path: Path, source: dict[str, Any], *, batch: int) -> list[Event]:
    events: list[Event] = []

    def record(stats: RunStats) -> None:
        events.append((stats.rows_read, stats.progress_done, stats.progress_total))

    spec = parse_spec(
        {
            "name": "progress",
            "source": source,
            "sink": {"kind": "parquet", "path": str(tmp_path / "out" / "p.parquet")},
            "batch": {"max_size": batch},
        }
    )
    LocalEngine(spec, on_progress=record).run()
    assert len(events) >= 4 and events[-1][1] == events[-1][2]  # several steps, 100% at the end
    return events


def _ends(paths: list[Path]) -> Callable[[int], int]:
    """Rows done -> bytes of the files up to the end of that row (header lines included)."""
    offsets: list[int] = []
    before = 0
    for number, path in enumerate(paths):
        data = path.read_bytes()
        ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1
        ends = ends[1:] if path.suffix == ".csv" else ends  # the header is no row
        if number + 1 < len(paths):
            ends[-1] = len(data)  # the file's last row ends with the file
        offsets.extend(int(before + e) for e in ends)
        before += len(data)
    return lambda rows: offsets[rows - 1]


def test_csv_progress_is_the_bytes_of_the_rows_written(tmp_path: Path) -> None:
    paths = [tmp_path / "a.csv", tmp_path / "b.csv"]
    for part, path in enumerate(paths):
        rows = [f"{part}{i:07d},{i % 97 / 7:.6f},{'x' * (i % 13)}" for i in range(60_000)]
        path.write_text("id,value,pad\n" + "\n".join(rows) + "\n")  # 1.6 MB each: several blocks
    end_of = _ends(paths)
    for rows, done, total in _run(tmp_path, {"kind": "csv", "path": str(tmp_path / "*.csv")}, batch=4096):
        assert total == sum(p.stat().st_size for p in paths)
        assert abs(done - end_of(rows)) <= 64 * 30, (rows, done, end_of(rows))  # a few lines


def test_jsonl_progress_is_exactly_the_bytes_of_the_rows_written(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps({"id": i, "pad": "y" * (i % 17)}) + "\n" for i in range(40_000)))
    end_of = _ends([path])
    for rows, done, _ in _run(tmp_path, {"kind": "jsonl", "path": str(path)}, batch=4096):
        assert done == end_of(rows)


def test_parquet_progress_is_each_files_share_of_rows_written(tmp_path: Path) -> None:
    sizes = []
    for name, count in (("a", 100_000), ("b", 30_000)):
        pq.write_table(
            pa.table({"id": np.arange(count), "v": np.random.default_rng(1).random(count)}),
            tmp_path / f"{name}.parquet",
            row_group_size=20_000,
        )
        sizes.append((count, (tmp_path / f"{name}.parquet").stat().st_size))
    source = {"kind": "parquet", "path": str(tmp_path / "*.parquet")}
    for rows, done, total in _run(tmp_path, source, batch=8192):
        first_rows, first_size = sizes[0]
        expected = (
            first_size * rows // first_rows
            if rows <= first_rows
            else first_size + sizes[1][1] * (rows - first_rows) // sizes[1][0]
        )
        assert total == first_size + sizes[1][1]
        assert abs(done - expected) <= 1


def _images(folder: Path, count: int) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(3)
    paths = []
    for i in range(count):
        side = 8 + 4 * (i % 5)  # different sizes, so bytes and rows differ
        path = folder / f"{i:02d}.png"
        Image.fromarray(rng.integers(0, 255, (side, side), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_images_and_objects_progress_is_the_bytes_of_the_files_written(tmp_path: Path) -> None:
    paths = _images(tmp_path / "img", 24)
    sizes = np.cumsum([p.stat().st_size for p in paths])
    images = {"kind": "images", "path": str(tmp_path / "img" / "*.png"), "resize": [8, 8], "mode": "L"}
    for rows, done, total in _run(tmp_path, images, batch=5):
        assert (done, total) == (sizes[rows - 1], sizes[-1])
    objects = {"kind": "objects", "path": str(tmp_path / "img")}
    for rows, done, total in _run(tmp_path, objects, batch=5):
        assert (done, total) == (sizes[rows - 1], sizes[-1])


def test_table_progress_is_rows_written(tmp_path: Path) -> None:
    with duckdb.connect(str(tmp_path / "w.duckdb")) as con:
        con.execute("CREATE TABLE t AS SELECT range AS id FROM range(10000)")
    source = {"kind": "table", "path": str(tmp_path / "w.duckdb"), "table": "t"}
    for rows, done, total in _run(tmp_path, source, batch=2048):
        assert (done, total) == (rows, 10_000)
