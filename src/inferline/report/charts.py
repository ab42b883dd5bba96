"""Hand-written inline SVG charts: bar charts, a confusion-matrix heatmap, time-series lines.

No JavaScript and no network: each chart is one `<svg>` element carrying its numbers in
`data-*` attributes (`data-label`, `data-value`, `data-row`, `data-col`, `data-series`,
`data-time`), so a page can be
checked by reading its DOM and a reader can hover for exact values (`<title>`).

Example:
    >>> svg = bar_chart("chart-classes", [Bar("setosa", 50), Bar("versicolor", 48)], title="Classes")
    >>> 'data-value="50"' in svg
    True
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from html import escape

import numpy as np

ACCENT = "#3b6fb6"
ERROR = "#c0392b"
FONT = "font-family: system-ui, sans-serif; font-size: 12px"


@dataclass(frozen=True)
class Bar:
    """One bar: its label, value, and optionally colour and hover text."""

    label: str
    value: float
    color: str = ACCENT
    hint: str | None = None


def nice_axis(value: float, *, ticks: int = 4) -> tuple[float, float]:
    """An axis for values up to `value`: (maximum, step), the step a 1, 2 or 5 x 10^k.

    At most `ticks` steps; counts get whole-number ticks (5 -> 0, 2, 4, 6).
    """
    if value <= 0:
        return 1.0, 0.25
    rough = value / ticks
    exponent = math.floor(math.log10(rough))
    step = 10.0 ** (exponent + 1)
    for factor in (1.0, 2.0, 5.0):
        candidate = factor * 10.0**exponent
        if candidate >= rough * (1 - 1e-12):
            step = candidate
            break
    return step * math.ceil(value / step - 1e-12), step


def number(value: float) -> str:
    """A value as shown on a chart: integers plain, others with 3 significant digits."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _data(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _short(label: str, size: int = 14) -> str:
    return label if len(label) <= size else label[: size - 1] + "…"


def bar_chart(
    chart_id: str,
    bars: list[Bar],
    *,
    title: str,
    y_label: str = "",
    width: int = 720,
    height: int = 300,
    fmt: Callable[[float], str] = number,
) -> str:
    """A vertical bar chart; bar heights are proportional to values on a 0-based axis."""
    left, right, top, bottom = 64, 16, 24, 64
    plot_w, plot_h = width - left - right, height - top - bottom
    top_value, step = nice_axis(max((b.value for b in bars), default=0.0))
    parts = [
        f'<svg id="{escape(chart_id)}" class="chart bar-chart" data-chart="bar" '
        f'data-axis-max="{_data(top_value)}" data-plot-height="{plot_h}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}" style="{FONT}">',
        f"<title>{escape(title)}</title>",
    ]
    for i in range(round(top_value / step) + 1):
        tick = step * i
        y = top + plot_h - plot_h * tick / top_value
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">'
            f"{escape(fmt(tick))}</text>"
        )
    if y_label:
        parts.append(
            f'<text x="14" y="{top + plot_h / 2:.1f}" transform="rotate(-90 14 {top + plot_h / 2:.1f})" '
            f'text-anchor="middle" fill="#333">{escape(y_label)}</text>'
        )
    if not bars:
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" '
            'fill="#777">no data</text>'
        )
    slot = plot_w / max(len(bars), 1)
    bar_w = max(min(slot * 0.7, 80), 1)
    rotate = len(bars) > 8
    for i, bar in enumerate(bars):
        h = plot_h * bar.value / top_value if top_value else 0.0
        x = left + slot * i + (slot - bar_w) / 2
        y = top + plot_h - h
        label, cx = escape(bar.label), x + bar_w / 2
        hint = escape(bar.hint or f"{bar.label}: {fmt(bar.value)}")
        parts.append(
            f'<rect class="bar" data-label="{label}" data-value="{_data(bar.value)}" x="{x:.2f}" '
            f'y="{y:.2f}" width="{bar_w:.2f}" height="{h:.2f}" fill="{bar.color}">'
            f"<title>{hint}</title></rect>"
        )
        if not rotate:
            parts.append(
                f'<text class="bar-value" data-label="{label}" x="{cx:.2f}" y="{y - 4:.2f}" '
                f'text-anchor="middle" fill="#222">{escape(fmt(bar.value))}</text>'
            )
        label_y = top + plot_h + 16
        transform = f' transform="rotate(-40 {cx:.2f} {label_y})"' if rotate else ""
        anchor = "end" if rotate else "middle"
        parts.append(
            f'<text class="bar-label" x="{cx:.2f}" y="{label_y}" text-anchor="{anchor}"{transform} '
            f'fill="#333">{escape(_short(bar.label))}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#888"/>'
    )
    parts.append("</svg>")
    return "".join(parts)


def heatmap(
    chart_id: str,
    labels: list[str],
    matrix: np.ndarray,
    *,
    title: str,
    row_title: str,
    col_title: str,
    cell: int = 0,
) -> str:
    """A square heatmap of counts: rows are `row_title` (truth), columns `col_title`.

    Each cell is a `<rect class="cell" data-row=... data-col=... data-value=...>` with its
    count printed on it; darker means more rows.
    """
    n = len(labels)
    cell = cell or int(max(min(480 / max(n, 1), 72), 14))
    left, top = 130, 110
    width, height = left + n * cell + 20, top + n * cell + 20
    peak = int(matrix.max()) if matrix.size else 0
    parts = [
        f'<svg id="{escape(chart_id)}" class="chart heatmap" data-chart="heatmap" '
        f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" style="{FONT}">',
        f"<title>{escape(title)}</title>",
        f'<text x="{left + n * cell / 2:.1f}" y="16" text-anchor="middle" fill="#333" '
        f'font-weight="bold">{escape(col_title)}</text>',
        f'<text x="16" y="{top + n * cell / 2:.1f}" text-anchor="middle" fill="#333" font-weight="bold" '
        f'transform="rotate(-90 16 {top + n * cell / 2:.1f})">{escape(row_title)}</text>',
    ]
    for j, name in enumerate(labels):
        cx = left + j * cell + cell / 2
        parts.append(
            f'<text class="col-label" x="{cx:.1f}" y="{top - 8}" text-anchor="start" fill="#333" '
            f'transform="rotate(-45 {cx:.1f} {top - 8})">{escape(_short(name))}</text>'
        )
    for i, row_name in enumerate(labels):
        y = top + i * cell
        parts.append(
            f'<text class="row-label" x="{left - 8}" y="{y + cell / 2 + 4:.1f}" text-anchor="end" '
            f'fill="#333">{escape(_short(row_name))}</text>'
        )
        for j, col_name in enumerate(labels):
            value = int(matrix[i, j])
            shade = value / peak if peak else 0.0
            fill = _blend(shade, diagonal=i == j)
            x = left + j * cell
            hint = f"{row_title} {row_name}, {col_title} {col_name}: {value:,}"
            parts.append(
                f'<rect class="cell" data-row="{escape(row_name)}" data-col="{escape(col_name)}" '
                f'data-value="{value}" x="{x}" y="{y}" width="{cell}" height="{cell}" fill="{fill}" '
                f'stroke="#fff"><title>{escape(hint)}</title></rect>'
            )
            if cell >= 22:
                ink = "#fff" if shade > 0.55 else "#222"
                parts.append(
                    f'<text class="cell-value" data-row="{escape(row_name)}" data-col="{escape(col_name)}" '
                    f'x="{x + cell / 2:.1f}" y="{y + cell / 2 + 4:.1f}" text-anchor="middle" '
                    f'fill="{ink}">{value:,}</text>'
                )
    parts.append("</svg>")
    return "".join(parts)


def _blend(shade: float, *, diagonal: bool) -> str:
    # White -> blue for the diagonal (agreement), white -> red-orange off it (mistakes).
    target = (33, 82, 160) if diagonal else (196, 78, 45)
    if shade <= 0:
        return "#f7f7f7"
    t = 0.12 + 0.88 * shade
    r, g, b = (round(255 + (c - 255) * t) for c in target)
    return f"#{r:02x}{g:02x}{b:02x}"


PALETTE = ("#3b6fb6", "#c0392b", "#2e8b57", "#d98c1f", "#7b4fa6", "#1f9bb4", "#8c564b", "#e377c2")


@dataclass(frozen=True)
class Line:
    """One line of a line chart: its name and (x, y) points, x in seconds since the epoch."""

    name: str
    points: list[tuple[float, float]]


def line_chart(
    chart_id: str,
    lines: list[Line],
    *,
    title: str,
    y_label: str = "",
    width: int = 720,
    height: int = 300,
) -> str:
    """A time-series chart: one `<g class="series" data-series=...>` per line, each point a
    `<circle class="point" data-time=... data-value=...>` (time as ISO 8601 UTC)."""
    left, right, top, bottom = 64, 140, 24, 48
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [x for line in lines for x, _ in line.points]
    ys = [y for line in lines for _, y in line.points]
    low = min(0.0, min(ys, default=0.0))
    top_value, step = nice_axis(max(ys, default=0.0) - low)
    first, last = min(xs, default=0.0), max(xs, default=0.0)
    span = (last - first) or 1.0

    def px(x: float) -> float:
        return left + plot_w * ((x - first) / span if last > first else 0.5)

    def py(y: float) -> float:
        return top + plot_h - plot_h * (y - low) / top_value

    parts = [
        f'<svg id="{escape(chart_id)}" class="chart line-chart" data-chart="line" '
        f'xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" style="{FONT}">',
        f"<title>{escape(title)}</title>",
    ]
    for i in range(round(top_value / step) + 1):
        tick = low + step * i
        y = py(tick)
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
            f'<text class="tick" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#555">'
            f"{escape(number(tick))}</text>"
        )
    if y_label:
        parts.append(
            f'<text x="14" y="{top + plot_h / 2:.1f}" transform="rotate(-90 14 {top + plot_h / 2:.1f})" '
            f'text-anchor="middle" fill="#333">{escape(y_label)}</text>'
        )
    if not xs:
        parts.append(
            f'<text x="{left + plot_w / 2}" y="{top + plot_h / 2}" text-anchor="middle" '
            'fill="#777">no data</text>'
        )
    else:
        for x in sorted({first, first + span / 2, last}):
            parts.append(
                f'<text class="time-label" x="{px(x):.1f}" y="{top + plot_h + 16}" text-anchor="middle" '
                f'fill="#333">{escape(_clock(x))}</text>'
            )
    for index, line in enumerate(lines):
        color = PALETTE[index % len(PALETTE)]
        name = escape(line.name)
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in line.points)
        parts.append(f'<g class="series" data-series="{name}">')
        if len(line.points) > 1:
            parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        for x, y in line.points:
            when = _iso(x)
            parts.append(
                f'<circle class="point" data-series="{name}" data-time="{when}" data-value="{_data(y)}" '
                f'cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.5" fill="{color}">'
                f"<title>{name} {escape(when)}: {escape(number(y))}</title></circle>"
            )
        parts.append(
            f'<text class="legend" x="{left + plot_w + 12}" y="{top + 12 + 16 * index}" fill="{color}">'
            f"■ {escape(_short(line.name, 18))}</text></g>"
        )
    parts.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#888"/>'
    )
    parts.append("</svg>")
    return "".join(parts)


def _iso(seconds: float) -> str:
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc)
    return moment.isoformat(timespec="milliseconds" if seconds % 1 else "seconds").replace("+00:00", "Z")


def _clock(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).strftime("%m-%d %H:%M:%S")
