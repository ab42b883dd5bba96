"""One self-contained HTML page for a report: inline CSS and SVG, no scripts, no network.

Figures a reader (or a test) looks for carry ids and `data-value` attributes:
`#rows-total`, `#accuracy`, `#agreement`, `#per-class tr[data-class]`, and the charts
`#chart-predicted-classes`, `#chart-confusion`, `#chart-agreement`, `#chart-throughput`.

Example:
    >>> page = render_report(load_report("predictions", db="warehouse.duckdb"))  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
from html import escape
from typing import Any

from inferline.io.windowed import WindowedTable
from inferline.report.charts import ACCENT, ERROR, Bar, Line, bar_chart, heatmap, line_chart, number
from inferline.report.data import ReportData
from inferline.report.metrics import Confusion, sort_classes

MAX_BARS = 30

CSS = """
body { font-family: system-ui, sans-serif; color: #222; margin: 0; background: #fafafa; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { margin: 0 0 4px; font-size: 26px; }
h2 { margin: 32px 0 8px; font-size: 19px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.where { color: #666; margin: 0 0 16px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: #fff; border: 1px solid #e2e2e2; border-radius: 6px; padding: 10px 16px; }
.card .figure { font-size: 24px; font-weight: 600; }
.card .caption { color: #666; font-size: 13px; }
table { border-collapse: collapse; background: #fff; margin: 8px 0; font-size: 14px; }
th, td { border: 1px solid #e2e2e2; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child, .text { text-align: left; }
th { background: #f0f0f0; }
.chart { background: #fff; border: 1px solid #e2e2e2; border-radius: 6px; margin: 8px 0; }
.note { color: #666; font-size: 13px; }
.status-error { color: #c0392b; font-weight: 600; }
"""


def percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def render_report(data: ReportData) -> str:
    """The whole page as text."""
    if data.windows is not None:
        sections = [_windows(data.windows), _runs(data)]
        what = "windowed table"
    else:
        sections = [_summary(data), _classes(data), _evaluation(data), _comparison(data), _runs(data)]
        what = f"prediction column <code>{escape(data.prediction)}</code>"
    generated = data.generated_at.strftime("%Y-%m-%d %H:%M UTC")
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>inferline report: {escape(data.table)}</title><style>{CSS}</style></head>"
        f"<body><main><h1>{escape(data.table)}</h1>"
        f'<p class="where">{escape(data.where)} · {what}'
        f" · generated {generated}</p>" + "".join(s for s in sections if s) + "</main></body></html>\n"
    )


def _windows(table: WindowedTable) -> str:
    """One line chart per aggregate, a line per group, each point a window (at its start)."""
    groups = ", ".join(table.groups) or "none"
    cards = "".join(
        [
            _card("windows-total", f"{table.windows:,}", "windowed rows (window x group)", table.windows),
            _card("window-groups", groups, "group columns"),
        ]
    )
    html = f'<section id="windows"><h2>Windows over time</h2><div class="cards">{cards}</div>'
    if table.groups_left_out:
        html += f'<p class="note">{table.groups_left_out:,} more groups with fewer windows are not drawn.</p>'
    for aggregate in table.aggregates:
        lines = [Line(s.group, s.points) for s in table.series if s.aggregate == aggregate]
        chart = line_chart(
            f"chart-window-{aggregate}",
            lines,
            title=f"{aggregate} per window, by {groups}",
            y_label=aggregate,
        )
        html += f"<h3><code>{escape(aggregate)}</code></h3>{chart}"
    if not table.aggregates:
        html += '<p class="note">No numeric aggregate to chart.</p>'
    return html + "</section>"


def _card(card_id: str, figure: str, caption: str, value: float | int | None = None) -> str:
    data = f' data-value="{value}"' if value is not None else ""
    return (
        f'<div class="card"><div class="figure" id="{card_id}"{data}>{escape(figure)}</div>'
        f'<div class="caption">{escape(caption)}</div></div>'
    )


def _summary(data: ReportData) -> str:
    cards = [
        _card("rows-total", f"{data.rows:,}", "rows", data.rows),
        _card("classes-total", f"{len(data.class_counts):,}", "predicted classes", len(data.class_counts)),
    ]
    if data.dead_letters is not None:
        cards.append(_card("dead-letters", f"{data.dead_letters:,}", "dead-lettered rows", data.dead_letters))
    if data.evaluation is not None:
        cards.append(_card("accuracy-card", percent(data.evaluation.accuracy), f"accuracy vs {data.label}"))
    html = f'<section id="summary"><h2>Summary</h2><div class="cards">{"".join(cards)}</div>'
    if data.model_versions:
        rows = "".join(
            f'<tr data-model-id="{escape(m)}"><td>{escape(m)}</td><td data-value="{c}">{c:,}</td></tr>'
            for m, c in data.model_versions
        )
        html += (
            '<table id="model-versions"><thead><tr><th>model version</th><th>rows</th></tr></thead>'
            f"<tbody>{rows}</tbody></table>"
        )
    return html + "</section>"


def _classes(data: ReportData) -> str:
    counts = data.class_counts
    names = sort_classes(counts)
    note = ""
    if len(names) > MAX_BARS:
        names = sorted(counts, key=lambda n: (-counts[n], n))[:MAX_BARS]
        note = f'<p class="note">The {MAX_BARS} most frequent of {len(counts):,} classes.</p>'
    bars = [Bar(n, counts[n]) for n in names]
    chart = bar_chart("chart-predicted-classes", bars, title="Predicted classes", y_label="rows")
    return f'<section id="predicted-classes"><h2>Predicted classes</h2>{note}{chart}</section>'


def _evaluation(data: ReportData) -> str:
    cm = data.evaluation
    if cm is None:
        return ""
    precision, recall, f1 = cm.macro()
    cards = "".join(
        [
            _card(
                "accuracy",
                percent(cm.accuracy),
                f"accuracy ({cm.correct:,} of {cm.total:,})",
                round(cm.accuracy, 6),
            ),
            _card("macro-precision", percent(precision), "macro precision", round(precision, 6)),
            _card("macro-recall", percent(recall), "macro recall", round(recall, 6)),
            _card("macro-f1", percent(f1), "macro F1", round(f1, 6)),
        ]
    )
    rows = "row has" if data.unlabelled == 1 else "rows have"
    note = f'<p class="note">{data.unlabelled:,} {rows} no {escape(str(data.label))} and are left out.</p>'
    chart = heatmap(
        "chart-confusion",
        cm.labels,
        cm.matrix,
        title=f"Confusion matrix: {data.label} (rows) vs {data.prediction} (columns)",
        row_title=f"actual ({data.label})",
        col_title=f"predicted ({data.prediction})",
    )
    return (
        f'<section id="evaluation"><h2>Against the label <code>{escape(str(data.label))}</code></h2>'
        f'<div class="cards">{cards}</div>{note if data.unlabelled else ""}{_per_class(cm)}'
        f"<h3>Confusion matrix</h3>{chart}</section>"
    )


def _per_class(cm: Confusion) -> str:
    rows = []
    for s in cm.per_class():
        cells = "".join(
            f'<td data-metric="{name}" data-value="{round(value, 6)}">{percent(value)}</td>'
            for name, value in (("precision", s.precision), ("recall", s.recall), ("f1", s.f1))
        )
        rows.append(
            f'<tr data-class="{escape(s.name)}"><td>{escape(s.name)}</td>{cells}'
            f'<td data-metric="support" data-value="{s.support}">{s.support:,}</td>'
            f'<td data-metric="predicted" data-value="{s.predicted}">{s.predicted:,}</td></tr>'
        )
    return (
        '<table id="per-class"><thead><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th>'
        f"<th>support</th><th>predicted</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _comparison(data: ReportData) -> str:
    comp = data.comparison
    if comp is None:
        return ""
    cm = comp.confusion
    cards = [
        _card(
            "agreement",
            percent(cm.accuracy),
            f"agreement ({cm.correct:,} of {cm.total:,} rows)",
            round(cm.accuracy, 6),
        )
    ]
    if comp.accuracy is not None and data.evaluation is not None:
        cards.append(
            _card(
                "compare-accuracy",
                percent(comp.accuracy),
                f"accuracy of {comp.name}",
                round(comp.accuracy, 6),
            )
        )
    chart = heatmap(
        "chart-agreement",
        cm.labels,
        cm.matrix,
        title=f"{data.prediction} (rows) vs {comp.name} (columns)",
        row_title=data.prediction,
        col_title=comp.name,
    )
    return (
        f'<section id="comparison"><h2>Compared with <code>{escape(comp.name)}</code></h2>'
        f'<p class="note">{escape(comp.how)}</p><div class="cards">{"".join(cards)}</div>{chart}</section>'
    )


def _runs(data: ReportData) -> str:
    runs = data.runs
    if not runs:
        return (
            '<section id="runs"><h2>Recent runs</h2><p class="note">No runs recorded for this table '
            "(<code>inferline run</code> records them in <code>inferline_runs</code>).</p></section>"
        )
    bars = []
    for r in runs:
        speed, when = float(r.get("rows_per_second") or 0.0), _when(r.get("started_at"))
        color = ERROR if r.get("status") == "error" else ACCENT
        bars.append(Bar(when, speed, color=color, hint=f"{when} {r.get('status')}: {number(speed)} rows/s"))
    chart = bar_chart("chart-throughput", bars, title="Throughput of recent runs", y_label="rows/s")
    rows = []
    for r in reversed(runs):
        status = escape(str(r.get("status")))
        error = escape(str(r.get("error") or ""))
        models = ", ".join(r.get("model_ids") or [])
        rows.append(
            f'<tr data-run-id="{escape(str(r.get("run_id")))}"><td>{_when(r.get("started_at"))}</td>'
            f'<td class="text status-{status}">{status}</td><td class="text">{escape(models)}</td>'
            f'<td data-value="{r.get("rows_read")}">{int(r.get("rows_read") or 0):,}</td>'
            f"<td>{int(r.get('rows_predicted') or 0):,}</td><td>{int(r.get('rows_dead') or 0):,}</td>"
            f'<td data-value="{r.get("rows_per_second")}">{number(float(r.get("rows_per_second") or 0))}</td>'
            f'<td>{float(r.get("seconds") or 0):.2f}</td><td class="text">{error}</td></tr>'
        )
    table = (
        '<table id="run-history"><thead><tr><th>started (UTC)</th><th class="text">status</th>'
        '<th class="text">models</th><th>read</th><th>predicted</th>'
        '<th>dead</th><th>rows/s</th><th>seconds</th><th class="text">error</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    return f'<section id="runs"><h2>Recent runs</h2>{chart}{table}</section>'


def _when(value: Any) -> str:
    if isinstance(value, dt.datetime):
        moment: dt.datetime = value.astimezone(dt.timezone.utc) if value.tzinfo is not None else value
        return moment.strftime("%m-%d %H:%M:%S")
    return str(value or "")
