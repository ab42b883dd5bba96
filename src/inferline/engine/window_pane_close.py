"""Closing windows from pane partials in memory: numpy places them, Arrow combines them.

A close of count / sum / min / max / avg over plain columns needs no query: each partial row
is repeated once per closing window it counts in (its window starts from `__first` to
`__last`, clipped to the closing ones), Arrow's group_by combines the repeats per (window,
group), and each output is a combined partial or, for `avg`, a sum over a count. The rows
are the ones `window_sql.aggregate_query` gives over the same partials (same key text, types
and order); `WindowOperator` checks the types against that query at its first close and
keeps the query for anything else (an expression, a group column whose text may differ).

Example:
    >>> closes = ArrowClose.for_plan(plan, panes.schema, group_by=["cls"])  # doctest: +SKIP
    >>> rows = closes.windows(panes, after=0, until=60, size=60, every=10)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inferline.engine.window_panes import PanePlan

# How a partial combines (`window_panes._COMBINE`), in pyarrow's names.
_MERGE = {"SUM": "sum", "MIN": "min", "MAX": "max"}


def _merge_kind(sql: str) -> str:
    return _MERGE[sql.removeprefix("CAST(").split("(")[0]]


def _text_safe(kind: pa.DataType) -> bool:
    # Integers and text read the same cast to text by Arrow as by DuckDB (floats, times do not).
    return bool(pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind))


class ArrowClose:
    """The closes of one pane plan by Arrow, or None (`for_plan`) when it needs the query."""

    def __init__(self, plan: PanePlan, group_by: Sequence[str]) -> None:
        self.plan = plan
        self.group_by = list(group_by)
        self.outputs = plan.outputs or {}

    @classmethod
    def for_plan(cls, plan: PanePlan, schema: pa.Schema, *, group_by: Sequence[str]) -> ArrowClose | None:
        if plan.outputs is None or any(not _text_safe(schema.field(g).type) for g in group_by):
            return None
        return cls(plan, group_by)

    def windows(self, panes: pa.Table, *, after: int, until: int, size: int, every: int) -> pa.Table:
        """The output rows of the windows ending in (after, until], from `panes`' partials."""
        lo = ((after - size) // every + 1) * every
        hi = ((until - size) // every) * every
        first = np.maximum(panes.column("__first").to_numpy(), lo)
        last = np.minimum(panes.column("__last").to_numpy(), hi)
        counts = np.where(last >= first, (last - first) // every + 1, 0)
        rows = np.repeat(np.arange(len(counts)), counts)
        # Each repeat's window start: its row's first start plus `every` per repeat before it.
        offsets = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        starts = first[rows] + offsets * every
        columns = [*self.group_by, *self.plan.merges]
        placed = panes.select(columns).take(pa.array(rows))
        placed = placed.append_column("__ws", pa.array(starts, pa.int64()))
        merges = [(c, _merge_kind(sql)) for c, sql in self.plan.merges.items()]
        combined = placed.group_by(["__ws", *self.group_by], use_threads=False).aggregate(merges)
        order = [("__ws", "ascending"), *((g, "ascending") for g in self.group_by)]
        combined = combined.sort_by(order)  # nulls last, as DuckDB's ORDER BY
        return self._output(combined, size)

    def _output(self, combined: pa.Table, size: int) -> pa.Table:
        kinds = {c: _merge_kind(sql) for c, sql in self.plan.merges.items()}
        start = combined.column("__ws").combine_chunks()
        end = pc.add(start, size)
        texts = [start.cast(pa.string()), end.cast(pa.string())]
        texts += [pc.coalesce(combined.column(g).cast(pa.string()), "") for g in self.group_by]
        columns: dict[str, pa.Array | pa.ChunkedArray] = {
            "key": pc.binary_join_element_wise(*texts, "|"),
            "window_start": start.cast(pa.timestamp("us")),
            "window_end": end.cast(pa.timestamp("us")),
        }
        for g in self.group_by:
            columns[g] = combined.column(g)
        for name, how in self.outputs.items():
            values = [combined.column(f"{c}_{kinds[c]}") for c in how[1:]]
            if how[0] == "value":
                value = values[0]
                if self.plan.merges[how[1]].startswith("CAST("):  # a count: BIGINT
                    value = value.cast(pa.int64())
                columns[name] = value
            else:  # ratio: CAST(SUM(total) AS DOUBLE) / NULLIF(CAST(SUM(count) AS BIGINT), 0)
                total, count = values
                none = pa.scalar(None, pa.float64())
                nonzero = pc.if_else(pc.equal(count, 0), none, count.cast(pa.float64()))
                columns[name] = pc.divide(total.cast(pa.float64()), nonzero)
        return pa.table(columns)
