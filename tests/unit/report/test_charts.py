"""Charts are SVG whose shapes carry, and are sized by, their numbers."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest

from inferline.report.charts import Bar, bar_chart, heatmap, nice_axis, number

SVG = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_bar_heights_are_proportional_to_values_on_a_zero_axis() -> None:
    svg = _parse(bar_chart("c", [Bar("a", 40), Bar("b", 10), Bar("<c>", 25.5)], title="T"))
    assert svg.get("id") == "c"
    bars = svg.findall(f"{SVG}rect[@class='bar']")
    assert [b.get("data-label") for b in bars] == ["a", "b", "<c>"]
    assert [float(b.get("data-value", "")) for b in bars] == [40, 10, 25.5]
    axis_max, plot_h = float(svg.get("data-axis-max", "")), float(svg.get("data-plot-height", ""))
    assert axis_max == 40
    for bar in bars:
        assert float(bar.get("height", "")) == pytest.approx(
            plot_h * float(bar.get("data-value", "")) / axis_max, abs=0.01
        )
    values = [t.text for t in svg.findall(f"{SVG}text[@class='bar-value']")]
    assert values == ["40", "10", "25.5"]


def test_empty_bar_chart_says_no_data() -> None:
    svg = _parse(bar_chart("c", [], title="T"))
    assert svg.findall(f"{SVG}rect[@class='bar']") == []
    assert any(t.text == "no data" for t in svg.iter(f"{SVG}text"))


def test_heatmap_cells_hold_the_matrix() -> None:
    matrix = np.array([[5, 1], [0, 7]])
    svg = _parse(heatmap("h", ["x", "y"], matrix, title="T", row_title="actual", col_title="predicted"))
    cells = {
        (c.get("data-row"), c.get("data-col")): int(c.get("data-value", "")) for c in svg.iter(f"{SVG}rect")
    }
    assert cells == {("x", "x"): 5, ("x", "y"): 1, ("y", "x"): 0, ("y", "y"): 7}
    shown = [t.text for t in svg.iter(f"{SVG}text") if t.get("class") == "cell-value"]
    assert shown == ["5", "1", "0", "7"]
    fills = {(c.get("data-row"), c.get("data-col")): c.get("fill") for c in svg.iter(f"{SVG}rect")}
    assert fills[("y", "x")] == "#f7f7f7"  # empty cells stay pale


@pytest.mark.parametrize(
    ("value", "axis"),
    [
        (0, (1, 0.25)),
        (5, (6, 2)),
        (7, (8, 2)),
        (40, (40, 10)),
        (50, (60, 20)),
        (169, (200, 50)),
        (0.3, (0.3, 0.1)),
    ],
)
def test_nice_axis(value: float, axis: tuple[float, float]) -> None:
    assert nice_axis(value) == pytest.approx(axis)


def test_number_formatting() -> None:
    assert number(1500) == "1,500" and number(12.3456) == "12.3" and number(123456.7) == "123,457"
