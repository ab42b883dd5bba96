"""The window operator alone: seconds spent adding, closing and committing per N rows.

    python bench/windows.py                  # 200,000 rows, 3 runs, medians
    python bench/windows.py --rows 20000     # smaller
    python bench/windows.py --smoke          # tiny: checks the benchmark runs
    python bench/windows.py --compare        # panes and rows alternately, in one run

Rows like bench/stream.py's windowed stream (2,000 rows per second of event time, 3 classes, a
score), in 4,096-row batches, through `WindowOperator` with the same 60 s sliding window every
10 s on a state file: `add` places a batch, `close` emits the windows the watermark passed, and
`commit` makes the state durable, per batch as the local engine's writer does. No model, no
queue: what the window costs per batch, whatever else the machine does. Count and mean are
kept as pane partials (`engine/window_panes.py`); `--compare` also runs the same window kept as
rows (one more aggregate the panes cannot combine, `any_value(predict)`), alternately, and
prints CPU seconds beside wall seconds (the wall clock of a loaded machine is mostly waiting).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from stream import WINDOW as STREAM_WINDOW  # noqa: E402

from inferline.engine.windows import WindowOperator  # noqa: E402
from inferline.pipeline import WindowSpec  # noqa: E402

# bench/stream.py's window; `sink` is required by the spec but never written here.
WINDOW = {**STREAM_WINDOW, "sink": {"kind": "jsonl", "path": "unused.jsonl"}}
BATCH = 4096
KEPT_AS_ROWS = {**WINDOW, "aggregates": {**WINDOW["aggregates"], "any": "any_value(predict)"}}


def one_run(rows: int, window: dict[str, object] = WINDOW) -> dict[str, float]:
    spent = {"add": 0.0, "close": 0.0, "commit": 0.0, "cpu": 0.0}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="inferline-bench-windows-") as tmp:
        op = WindowOperator(WindowSpec.model_validate(window))
        op.open(str(Path(tmp) / "state.duckdb"))
        for start in range(0, rows, BATCH):
            ids = np.arange(start, min(start + BATCH, rows))
            batch = pa.record_batch(
                {
                    "key": pa.array([f"1780000000000-{i}" for i in ids]),
                    "id": pa.array(ids),
                    "predict": pa.array(ids % 3),
                    "score": pa.array(rng.random(len(ids))),
                    "ts": pa.array(1_780_000_000.0 + ids / 2_000),
                }
            )
            began, cpu = time.perf_counter(), time.process_time()
            op.add(batch, ingest_time=0.0)
            added = time.perf_counter()
            op.close()
            closed = time.perf_counter()
            op.commit()
            spent["add"] += added - began
            spent["close"] += closed - added
            spent["commit"] += time.perf_counter() - closed
            spent["cpu"] += time.process_time() - cpu
        spent["held"] = op.open_rows()
        op.close_state()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the benchmark runs")
    parser.add_argument("--compare", action="store_true", help="also the window kept as rows, alternately")
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.repeat = 10_000, 1
    kinds = {"panes": WINDOW, "rows": KEPT_AS_ROWS} if args.compare else {"panes": WINDOW}
    one_run(min(args.rows, 10_000))  # imports and first parses out of the figures
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    for _ in range(args.repeat):
        for kind, window in kinds.items():
            runs[kind].append(one_run(args.rows, window))
    batches = -(-args.rows // BATCH)
    print(f"windows: {args.rows:,} rows in {batches} batches of {BATCH:,}; medians of {args.repeat} runs (s)")
    for kind, done in runs.items():
        medians = {step: statistics.median(r[step] for r in done) for step in done[0]}
        total = medians["add"] + medians["close"] + medians["commit"]
        figures = "  ".join(f"{step} {medians[step]:.3f}" for step in ("add", "close", "commit"))
        print(
            f"{kind:<6} {figures}  total {total:.3f} ({total / batches * 1000:.1f} ms per batch)  "
            f"cpu {medians['cpu']:.3f}  state rows {medians['held']:,.0f}"
        )


if __name__ == "__main__":
    main()
