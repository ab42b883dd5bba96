"""The server's `GET /` dashboard, rendered by headless Chromium against a real server process."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import httpx
import pytest
from sklearn.datasets import load_iris

from inferline.examples.iris import FEATURES
from inferline.io.warehouse import connect
from inferline.models.store import ModelStore
from tests.browser import Element, dump_dom, parse_dom, screenshot
from tests.e2e.server import running_server


def _render(url: str, profile: Path) -> Element:
    return parse_dom(dump_dom(url, profile, virtual_time_budget_ms=5000))


def test_dashboard_shows_models_requests_latency_and_batches(tmp_path: Path, iris_example: Path) -> None:
    store = tmp_path / "store"
    models = ModelStore(str(store))
    models.add("iris", str(iris_example / "models/iris-1.joblib"), inputs=FEATURES)
    models.add("iris", str(iris_example / "models/iris-1.joblib"), inputs=FEATURES)
    models.pin("iris", 1)
    rows = load_iris().data
    warehouse = str(tmp_path / "warehouse.duckdb")
    with connect(warehouse, read_only=False) as con:
        con.sql("CREATE TABLE flowers AS SELECT range AS x FROM range(7)")
        # A window sink's table: a line per merchant for each aggregate (n, rate), not for ids.
        con.sql(
            "CREATE TABLE per_minute AS SELECT "
            "epoch_us(s)::VARCHAR || '|' || epoch_us(e)::VARCHAR || '|' || m AS key, "
            "s AS window_start, e AS window_end, m AS merchant, n, rate, [n] AS ids FROM (SELECT *, "
            "s + INTERVAL 1 MINUTE AS e FROM (VALUES (TIMESTAMP '2026-12-01 10:00:00', 'a', 3, 0.5), "
            "(TIMESTAMP '2026-12-01 10:01:00', 'a', 5, 0.25), "
            "(TIMESTAMP '2026-12-01 10:00:00', 'b', 2, 1.0)) v(s, m, n, rate))"
        )
    with running_server(
        store, "--max-batch-delay", "0", "--watch-interval", "0", "--warehouse", warehouse
    ) as base:
        for i in range(5):
            route = "iris/2" if i == 4 else "iris"  # version 2 is loaded on its first request
            answer = httpx.post(f"{base}/predictions/{route}", json=rows[3 * i : 3 * i + 3].tolist())
            assert answer.status_code == 200
        assert httpx.post(f"{base}/predictions/iris", json={"bad": 1}).status_code == 422

        page = _render(f"{base}/", tmp_path / "chrome")
        stats = httpx.get(f"{base}/dashboard/stats").json()
        shot = screenshot(
            f"{base}/",
            tmp_path / "dashboard.png",
            tmp_path / "chrome",
            size=(1280, 1400),
            virtual_time_budget_ms=5000,
        )
    print(f"dashboard screenshot: {shot}")

    assert int(page.find("body").attrs["data-updates"]) >= 1, "the page never fetched its stats"
    assert page.by_id("status").text.startswith("live")
    assert page.by_id("requests-total").text == "6" and stats["totals"]["requests"] == 6
    assert page.by_id("errors-total").text == "1"
    assert page.by_id("batch-rows").text == "15"
    totals = stats["totals"]
    assert 0 < totals["p50_ms"] <= totals["p99_ms"]
    assert float(page.by_id("latency-p50").attrs["data-value"]) == pytest.approx(totals["p50_ms"])
    assert float(page.by_id("latency-p99").attrs["data-value"]) == pytest.approx(totals["p99_ms"])
    assert page.by_id("latency-p50").text == to_fixed_2(totals["p50_ms"])
    assert float(page.by_id("mean-batch").attrs["data-value"]) == pytest.approx(totals["mean_batch"])
    assert 1 <= totals["mean_batch"] <= 3
    # Requests/s covers the last 10 s only: on a slow machine Chromium may start after that.
    assert 0 <= float(page.by_id("requests-per-second").attrs["data-value"]) <= 6 / 10

    (row,) = [r for r in page.by_id("models").find_all("tr") if "data-model" in r.attrs]
    cells = [td.text for td in row.find_all("td")]
    assert cells[:4] == ["iris", "1 (default), 2", "6", "1"]
    assert row.attrs["data-default"] == "1"

    # --warehouse: the tables of that DuckDB file and their rows.
    assert "hidden" not in page.by_id("warehouse-section").attrs
    assert page.by_id("warehouse-path").text == warehouse
    table, _ = [r for r in page.by_id("warehouse").find_all("tr") if "data-table" in r.attrs]
    assert table.attrs["data-table"] == "flowers"
    assert [(td.text, td.attrs.get("data-value")) for td in table.find_all("td")] == [
        ("flowers", None),
        ("7", "7"),
    ]
    assert stats["warehouse"]["tables"][0] == {"name": "flowers", "rows": 7}
    assert stats["warehouse"]["error"] is None
    windows = stats["warehouse"]["tables"][1]["windows"]
    assert (windows["groups"], windows["aggregates"]) == (["merchant"], ["n", "rate"])
    # The windowed table charted over time: one line per merchant, a point per window.
    for aggregate, lines in {
        "n": {"a": [("10:00", 3), ("10:01", 5)], "b": [("10:00", 2)]},
        "rate": {"a": [("10:00", 0.5), ("10:01", 0.25)], "b": [("10:00", 1)]},
    }.items():
        chart = page.by_id(f"chart-window-per_minute-{aggregate}")
        series = chart.find_all("g", class_="series")
        assert [g.attrs["data-series"] for g in series] == ["a", "b"]
        for group in series:
            points = [
                (p.attrs["data-time"], p.num("data-value")) for p in group.find_all("circle", class_="point")
            ]
            expected = [(f"2026-12-01T{hm}:00Z", v) for hm, v in lines[group.attrs["data-series"]]]
            assert points == expected
    assert not page.find_all("svg", id="chart-window-per_minute-ids")

    bars = page.by_id("chart-requests").find_all("rect", class_="bar")
    assert sum(float(b.attrs["data-value"]) for b in bars) == 6
    chart = page.by_id("chart-requests")
    scale = chart.num("data-axis-max") / chart.num("data-plot-height")
    for bar in bars:  # what a reader sees: the bar's height on the axis
        assert bar.num("height") * scale == pytest.approx(bar.num("data-value"))
    points = page.by_id("chart-latency").find_all("circle", class_="p99_ms")
    assert points and max(float(p.attrs["data-value"]) for p in points) == pytest.approx(
        totals["p99_ms"], rel=0.5
    )
    batch_bars = page.by_id("chart-batch").find_all("rect", class_="bar")
    assert batch_bars and all(1 <= float(b.attrs["data-value"]) <= 3 for b in batch_bars)


def to_fixed_2(value: float) -> str:
    """JavaScript's value.toFixed(2): the exact double rounded half up (Python's :.2f rounds half
    to even, so 2.625 gives '2.62' where the page shows '2.63')."""
    return str(Decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
