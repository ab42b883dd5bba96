"""A windowed table read back as time series: one line per group for each aggregate.

A `window:` sink's table has `key` (`<start µs>|<end µs>|<group values>`), `window_start`,
`window_end`, the group columns, then the aggregates. The group columns are the ones after
`window_end` that the key counts; the numeric columns after them are charted, each point at its
window's start. `inferline report` and the server dashboard both draw these series.

Example:
    >>> table = read_windowed(con, '"fraud_per_minute"', "fraud_per_minute")  # doctest: +SKIP
    >>> [(s.aggregate, s.group, len(s.points)) for s in table.series]  # doctest: +SKIP
    [('n', 'a', 12), ('n', 'b', 12), ('fraud_rate', 'a', 12), ('fraud_rate', 'b', 12)]
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import duckdb

from inferline.io.duckdb import quote

WINDOW_COLUMNS = ("window_start", "window_end")
MAX_GROUPS = 12  # lines per chart; the groups with the most windows are kept
_NUMERIC = re.compile(r"^(U?(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT)|FLOAT|DOUBLE|DECIMAL(\(\d+, ?\d+\))?)$")


@dataclass
class Series:
    """One group's values of one aggregate: (window start in seconds since the epoch, value)."""

    aggregate: str
    group: str
    points: list[tuple[float, float]]


@dataclass
class WindowedTable:
    """The series of a windowed table, and what they were read from."""

    table: str
    groups: list[str]
    aggregates: list[str]
    windows: int  # rows (one per window and group)
    series: list[Series] = field(default_factory=list)
    groups_left_out: int = 0


def is_windowed(columns: list[str]) -> bool:
    return all(c in columns for c in WINDOW_COLUMNS)


def read_windowed(
    con: duckdb.DuckDBPyConnection, relation: str, name: str, *, last: int | None = None
) -> WindowedTable | None:
    """The series of `relation` (a quoted table or a file reader), or None if it is not windowed.

    `last` keeps the latest that many window starts (the dashboard's live view).
    """
    described = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    columns = [str(row[0]) for row in described]
    if not is_windowed(columns):
        return None
    types = {str(row[0]): str(row[1]).upper() for row in described}
    after = columns[columns.index("window_end") + 1 :]
    groups = after[: _group_count(con, relation, columns, after)]
    aggregates = [c for c in after[len(groups) :] if _NUMERIC.match(types[c])]
    where = ""
    if last is not None:
        where = (
            f"WHERE window_start IN (SELECT DISTINCT window_start FROM {relation} "
            f"ORDER BY 1 DESC LIMIT {int(last)})"
        )
    selected = ", ".join(
        [
            "epoch_us(window_start) / 1e6",
            *[f"CAST({quote(g)} AS VARCHAR)" for g in groups],
            *[f"CAST({quote(a)} AS DOUBLE)" for a in aggregates],
        ]
    )
    rows = con.execute(f"SELECT {selected} FROM {relation} {where} ORDER BY 1").fetchall()
    table = WindowedTable(name, groups, aggregates, windows=len(rows))
    lines: dict[str, list[tuple[float, tuple[float | None, ...]]]] = {}
    for row in rows:
        label = ", ".join("(null)" if v is None else str(v) for v in row[1 : 1 + len(groups)]) or "all"
        lines.setdefault(label, []).append((float(row[0]), tuple(row[1 + len(groups) :])))
    kept = sorted(lines, key=lambda g: (-len(lines[g]), g))[:MAX_GROUPS]
    table.groups_left_out = len(lines) - len(kept)
    for index, aggregate in enumerate(aggregates):
        for group in sorted(kept):
            points = []
            for t, values in lines[group]:
                value = values[index]
                if value is not None and math.isfinite(value):
                    points.append((t, float(value)))
            table.series.append(Series(aggregate, group, points))
    return table


def _group_count(con: duckdb.DuckDBPyConnection, relation: str, columns: list[str], after: list[str]) -> int:
    # The key counts the group values: `<start>|<end>|g1|g2`; without a key, text columns are groups.
    if "key" in columns:
        found = con.execute(
            f"SELECT min(len(string_split(CAST(key AS VARCHAR), '|'))) - 2 FROM {relation}"
        ).fetchall()
        count = found[0][0] if found else None
        if count is not None:
            return max(0, min(int(count), len(after)))
    return 0
