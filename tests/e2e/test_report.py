"""`inferline report` writes one self-contained page whose charts show the table's numbers.

The page is rendered by headless Chromium; the assertions read the DOM Chromium built.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import duckdb
import numpy as np
import pytest

from inferline.engine.local import run_pipeline
from inferline.examples.iris import FEATURES
from inferline.pipeline import load_spec
from inferline.report.charts import ERROR
from inferline.report.runs import RunRecord, write_run_duckdb
from tests.animals import AGREEMENT, CONFUSION, LABELS, write_animals_db
from tests.browser import Element, dump_dom, parse_dom, screenshot
from tests.conftest import CliRunner

RUN_SPEEDS = [(120.0, "ok"), (80.0, "error"), (200.0, "ok")]


def _bars(page: Element, chart_id: str) -> list[tuple[str, float, float]]:
    chart = page.by_id(chart_id)
    axis_max, plot_h = chart.num("data-axis-max"), chart.num("data-plot-height")
    bars = chart.find_all("rect", class_="bar")
    # The value a reader sees is the bar's height on the chart's axis.
    return [(b.attrs["data-label"], b.num("data-value"), b.num("height") / plot_h * axis_max) for b in bars]


def _cells(page: Element, chart_id: str) -> dict[tuple[str, str], tuple[int, str]]:
    chart = page.by_id(chart_id)
    shown = {
        (t.attrs["data-row"], t.attrs["data-col"]): t.text
        for t in chart.find_all("text", class_="cell-value")
    }
    return {
        (c.attrs["data-row"], c.attrs["data-col"]): (
            int(c.attrs["data-value"]),
            shown[c.attrs["data-row"], c.attrs["data-col"]],
        )
        for c in chart.find_all("rect", class_="cell")
    }


def _rows(page: Element, table_id: str, attribute: str) -> list[Element]:
    return [row for row in page.by_id(table_id).find_all("tr") if attribute in row.attrs]


def _one_line_error(result: object) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]  # type: ignore[attr-defined]
    assert result.returncode == 1 and len(lines) == 1, result.stderr  # type: ignore[attr-defined]
    return lines[0]


def test_report_of_a_known_table_shows_its_numbers_in_chromium(project: Path, cli: CliRunner) -> None:
    write_animals_db("zoo.duckdb")
    start = dt.datetime(2026, 1, 2, 9, 0, tzinfo=dt.timezone.utc)
    for i, (speed, status) in enumerate(RUN_SPEEDS):
        write_run_duckdb(
            "zoo.duckdb",
            RunRecord(
                pipeline="zoo",
                spec="zoo.yaml",
                started_at=start + dt.timedelta(minutes=i),
                ended_at=start + dt.timedelta(minutes=i, seconds=5),
                status=status,
                output_table="animals",
                rows_read=int(speed * 5),
                rows_per_second=speed,
                error="boom" if status == "error" else None,
            ),
        )
    result = cli(
        "report",
        "animals",
        "--db",
        "zoo.duckdb",
        "--label",
        "truth",
        "--compare",
        "animals_v2",
        "-o",
        "out/report.html",
    )
    assert (
        "wrote out/report.html: 10 rows, 3 classes, accuracy 66.7%, agreement with animals_v2 70.0%"
        in result.stdout
    )
    html = Path("out/report.html").read_text()
    # Self-contained: no scripts, stylesheets or images fetched from anywhere.
    assert not re.search(r"<(script|link|img|iframe)\b", html) and "http://" not in html.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )

    url = (project / "out/report.html").as_uri()
    page = parse_dom(dump_dom(url, project / "chrome-profile"))
    assert page.by_id("rows-total").num("data-value") == 10
    assert page.by_id("dead-letters").text == "2"
    versions = [
        [td.text for td in row.find_all("td")] for row in _rows(page, "model-versions", "data-model-id")
    ]
    assert versions == [["animals/1", "6"], ["animals/2", "4"]]

    bars = _bars(page, "chart-predicted-classes")
    assert [(label, value) for label, value, _ in bars] == [("bird", 1), ("cat", 5), ("dog", 4)]
    for _, value, drawn in bars:
        assert drawn == pytest.approx(value, abs=0.01)
    shown = [t.text for t in page.by_id("chart-predicted-classes").find_all("text", class_="bar-value")]
    assert shown == ["1", "5", "4"]

    assert page.by_id("accuracy").text == "66.7%"
    assert page.by_id("accuracy").num("data-value") == pytest.approx(6 / 9, abs=1e-6)
    cat = page.by_id("per-class").find("tr", data_class="cat")
    assert cat.find("td", data_metric="precision").text == "60.0%"
    assert cat.find("td", data_metric="recall").text == "75.0%"
    assert cat.find("td", data_metric="support").text == "4"

    cells = _cells(page, "chart-confusion")
    for i, truth in enumerate(LABELS):
        for j, predicted in enumerate(LABELS):
            assert cells[truth, predicted] == (CONFUSION[i][j], str(CONFUSION[i][j]))

    assert page.by_id("agreement").text == "70.0%"
    assert page.by_id("compare-accuracy").text == "77.8%"
    agreement = _cells(page, "chart-agreement")
    assert {k: v for k, (v, _) in agreement.items()} == {
        (a, b): AGREEMENT[i][j] for i, a in enumerate(LABELS) for j, b in enumerate(LABELS)
    }

    runs = _bars(page, "chart-throughput")
    assert [value for _, value, _ in runs] == [speed for speed, _ in RUN_SPEEDS]
    for _, value, drawn in runs:
        assert drawn == pytest.approx(value, abs=0.01)
    colors = [b.attrs["fill"] for b in page.by_id("chart-throughput").find_all("rect", class_="bar")]
    assert colors[1] == ERROR and colors[0] != ERROR
    history = _rows(page, "run-history", "data-run-id")
    assert [row.find_all("td")[1].text for row in history] == ["ok", "error", "ok"]  # newest first
    assert history[1].find_all("td")[-1].text == "boom"

    shot = screenshot(url, project / "report.png", project / "chrome-profile")
    print(f"report screenshot: {shot}")


def test_report_after_iris_runs_shows_accuracy_and_their_throughput(project: Path, cli: CliRunner) -> None:
    # The ONNX iris model: unpickling the .joblib imports scikit-learn (~1.5 s CPU a run).
    onnx = ("--set", "model.uri=examples/iris/models/iris-*.onnx")
    cli("run", "examples/iris/pipeline.yaml", *onnx)
    cli("run", "examples/iris/pipeline.yaml", *onnx, "--limit", "30")
    result = cli("report", "iris_predictions", "--db", "warehouse.duckdb", "--label", "target")
    import onnxruntime

    session = onnxruntime.InferenceSession("examples/iris/models/iris-1.onnx")
    with duckdb.connect("warehouse.duckdb", read_only=True) as con:
        rows = con.execute(f"SELECT {', '.join(FEATURES)}, target FROM iris_predictions").fetchall()
        speeds = [
            s
            for (s,) in con.execute(
                "SELECT rows_per_second FROM inferline_runs ORDER BY started_at"
            ).fetchall()
        ]
    data = np.array(rows)
    labels = session.run(None, {"input": data[:, :4].astype(np.float32)})[0]
    expected = float(np.mean(labels == data[:, 4]))
    assert f"accuracy {expected * 100:.1f}%" in result.stdout
    page = parse_dom(dump_dom((project / "report.html").as_uri(), project / "chrome-profile"))
    assert page.by_id("accuracy").num("data-value") == pytest.approx(expected, abs=1e-6)
    assert sum(value for _, value, _ in _bars(page, "chart-predicted-classes")) == 150
    assert [value for _, value, _ in _bars(page, "chart-throughput")] == pytest.approx(speeds)
    versions = [
        [td.text for td in row.find_all("td")] for row in _rows(page, "model-versions", "data-model-id")
    ]
    assert versions == [["iris/1", "150"]]


def test_report_errors_are_one_line(project: Path, cli: CliRunner) -> None:
    write_animals_db("zoo.duckdb")
    line = _one_line_error(cli("report", "zebras", "--db", "zoo.duckdb", check=False))
    assert line.startswith("error: report: zoo.duckdb: no table 'zebras' (tables: animals,")
    Path("blocker").write_text("a file, not a folder")
    line = _one_line_error(
        cli("report", "animals", "--db", "zoo.duckdb", "-o", "blocker/r.html", check=False)
    )
    assert (
        line.startswith("error: report: cannot write blocker/r.html (") and "choose another -o path" in line
    )


WINDOWED_SPEC = """\
name: payments
source: {kind: jsonl, path: events.jsonl}
sink: {kind: duckdb, path: warehouse.duckdb, table: payments}
window:
  kind: fixed
  size: 10s
  time: ts
  group_by: [merchant]
  aggregates: {n: "count(*)", fraud_rate: "avg(prediction = 1)", ids: "list(id ORDER BY id)"}
  sink: {kind: duckdb, path: warehouse.duckdb, table: fraud_windows}
"""
# (id, second, merchant, prediction); fixed 10 s windows from 2026-12-01T00:00:00Z.
PAYMENTS = [(0, 1, "a", 1), (1, 3, "b", 0), (2, 4, "a", 0), (3, 12, "a", 1)]
PAYMENTS += [(4, 14, "b", 1), (5, 15, "b", 1), (6, 22, "a", 0), (7, 25, "b", 0)]


def test_a_windowed_table_is_charted_over_time_a_line_per_group(project: Path, cli: CliRunner) -> None:
    base = int(dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc).timestamp())
    Path("events.jsonl").write_text(
        "".join(
            f'{{"id": {i}, "ts": {base + t}, "merchant": "{m}", "prediction": {p}}}\n'
            for i, t, m, p in PAYMENTS
        )
    )
    Path("payments.yaml").write_text(WINDOWED_SPEC)
    assert run_pipeline(load_spec("payments.yaml")).window_rows == 6  # in this process: the report is the CLI
    result = cli("report", "fraud_windows", "--db", "warehouse.duckdb", "-o", "windows.html")
    assert "wrote windows.html: 6 windowed rows, charted over time: n, fraud_rate" in result.stdout
    page = parse_dom(Path("windows.html").read_text())
    assert page.by_id("windows-total").num("data-value") == 6
    assert page.by_id("window-groups").text == "merchant"
    minute = "2026-12-01T00:00:"
    expected = {
        "chart-window-n": {"a": [("00", 2), ("10", 1), ("20", 1)], "b": [("00", 1), ("10", 2), ("20", 1)]},
        "chart-window-fraud_rate": {
            "a": [("00", 0.5), ("10", 1), ("20", 0)],
            "b": [("00", 0), ("10", 1), ("20", 0)],
        },
    }
    for chart_id, lines in expected.items():
        chart = page.by_id(chart_id)
        series = chart.find_all("g", class_="series")
        assert [g.attrs["data-series"] for g in series] == ["a", "b"]
        drawn: dict[float, float] = {}
        for group in series:
            points = group.find_all("circle", class_="point")
            got = [(p.attrs["data-time"], p.num("data-value")) for p in points]
            assert got == [(f"{minute}{s}Z", v) for s, v in lines[group.attrs["data-series"]]]
            assert len(group.find_all("polyline")) == 1
            for p in points:  # one height per value, higher values drawn higher
                drawn.setdefault(p.num("data-value"), p.num("cy"))
                assert drawn[p.num("data-value")] == p.num("cy")
        heights = [drawn[v] for v in sorted(drawn)]
        assert heights == sorted(heights, reverse=True)
    assert "chart-window-ids" not in Path("windows.html").read_text()  # a list is not charted
