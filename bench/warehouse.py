"""Reading the warehouse while a stream writes it: consume rate, reader latency, visibility.

    python bench/warehouse.py                          # 100,000 messages; 1,000 msg/s for 10 s
    python bench/warehouse.py --baseline-ref 0fa0660   # also the code before turns, same run
    python bench/warehouse.py --table-rows 10000000    # the table holds 10M rows before the stream
    python bench/warehouse.py --smoke                  # tiny sizes: checks the benchmark runs

Each figure is taken in a child process running the given source tree (the baseline is
`git archive REF` of this repository), in the same run, on the embedded queue:
  - consume msg/s: `LocalEngine` on a backlog of --messages iris messages into DuckDB, with
    no reader, then with a reader process polling `SELECT count(*)` every 200 ms;
  - the reader's query ms p50/p99 (open + count + close) and its failed polls (lock errors);
  - visible ms p50/p99: a thread publishes --rate msg/s for --seconds while the stream runs;
    a message is visible at the first poll whose count covers it (polls every 200 ms). Counted
    from the first poll that sees a row (the stream's start, loading the model, is not a
    publish-to-visible latency).
With --table-rows N the table is created by a one-message run of the stream (the sink's own
schema and index) and filled with N rows in one statement before each variant.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

READER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import duckdb
path, until = sys.argv[2], time.monotonic() + float(sys.argv[3])
try:
    from inferline.io.warehouse import connect
except ImportError:  # the code before turns: a plain read-only connection
    connect = None
while time.monotonic() < until:
    started = time.perf_counter()
    try:
        if connect is not None:
            with connect(path) as con:
                opened = time.perf_counter()
                n = con.sql("SELECT count(*) FROM bench").fetchall()[0][0]
        else:
            with duckdb.connect(path, read_only=True) as con:
                opened = time.perf_counter()
                n = con.sql("SELECT count(*) FROM bench").fetchall()[0][0]
        ms = (time.perf_counter() - started) * 1000
        print(json.dumps({"t": time.time(), "ms": ms, "open": (opened - started) * 1000, "n": n}), flush=True)
    except Exception as exc:
        if "does not exist" not in str(exc) and "not found" not in str(exc):  # before the first commit
            print(json.dumps({"t": time.time(), "error": str(exc).splitlines()[0]}), flush=True)
    time.sleep(0.2)
"""

CONSUMER = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
from inferline.engine.local import LocalEngine
from inferline.pipeline import parse_spec
root, url, limit = sys.argv[2], sys.argv[3], int(sys.argv[4])
spec = parse_spec({
    "name": "bench-warehouse",
    "source": {"kind": "topic", "url": url, "topic": "bench"},
    "model": {"name": "iris", "uri": root + "/models/iris-*.onnx", "inputs": "feature"},
    "output": {"id": "id", "predict": "prediction", "model_id": "model_id"},
    "sink": {"kind": "duckdb", "path": root + "/warehouse.duckdb", "table": "bench"},
    "batch": {"max_size": 4096, "max_wait_ms": 50},
})
import logging, re
turns = {"write": [], "checkpoint": [], "read": [], "wait": []}
class Turns(logging.Handler):  # the writer's per-turn timings (DEBUG lines of inferline.warehouse)
    def emit(self, record):
        text = record.getMessage()
        held = re.search(r"write turn \\d+ held ([\\d.]+) ms, of which checkpoint \\+ detach ([\\d.]+)", text)
        if held:
            turns["write"].append(float(held[1])); turns["checkpoint"].append(float(held[2]))
        waited = re.search(r"after waiting ([\\d.]+) ms", text)
        if waited:
            turns["wait"].append(float(waited[1]))
        read = re.search(r"read turn held ([\\d.]+) ms", text)
        if read:
            turns["read"].append(float(read[1]))
warehouse_log = logging.getLogger("inferline.warehouse")
warehouse_log.setLevel(logging.DEBUG)
warehouse_log.addHandler(Turns())
print("ready", flush=True)
started = time.perf_counter()
summary = LocalEngine(spec, limit=limit, until_idle=5.0).run()
seconds = time.perf_counter() - started
print(json.dumps({"rows": summary.rows_read, "seconds": seconds, "turns": turns}), flush=True)
"""


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _publish(url: str, count: int, *, start: int = 0) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    import inferline
    from inferline.examples import iris_stream

    inferline.publish("bench", iris_stream.messages(count, start=start), url=url, chunk_size=5000)


FILL = """
import sys
sys.path.insert(0, sys.argv[1])
import duckdb
path, rows = sys.argv[2], int(sys.argv[3])
with duckdb.connect(path) as con:
    con.execute("SET enable_progress_bar = false")
    described = con.sql("DESCRIBE bench").fetchall()
    values = []
    for name, kind, *_ in described:
        if name == "key":
            values.append("'fill-' || i")
        elif kind in ("BIGINT", "INTEGER", "DOUBLE", "FLOAT", "VARCHAR"):
            values.append(f"CAST(i AS {kind})")
        else:
            values.append("NULL")
    con.execute(f"INSERT INTO bench SELECT {', '.join(values)} FROM range({rows}) t(i)")
"""


def prefill(src: Path, root: Path, url: str, rows: int) -> None:
    """The stream's table, made by the stream itself from one message, then `rows` rows more."""
    _publish(url, 1, start=10**9)
    subprocess.run(
        [sys.executable, "-c", CONSUMER, str(src), str(root), url, "1"], check=True, capture_output=True
    )
    subprocess.run(
        [sys.executable, "-c", FILL, str(src), str(root / "warehouse.duckdb"), str(rows)], check=True
    )


def run_variant(
    src: Path, root: Path, *, messages: int, reader: bool, rate: int, seconds: float, table_rows: int = 0
) -> dict[str, float]:
    """One consume run (and optionally a reader) of the tree at `src`, in a fresh warehouse."""
    for leftover in root.glob("warehouse.duckdb*"):
        leftover.unlink()
    for leftover in root.glob("queue.db*"):
        leftover.unlink()
    url = str(root / "queue.db")
    if table_rows:
        prefill(src, root, url, table_rows)
    steady = rate > 0
    total = int(rate * seconds) if steady else messages
    if not steady:
        _publish(url, messages)
    consumer = subprocess.Popen(
        [sys.executable, "-c", CONSUMER, str(src), str(root), url, str(total)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert consumer.stdout is not None
    assert consumer.stdout.readline().strip() == "ready"
    poller = None
    if reader:
        poller = subprocess.Popen(
            [sys.executable, "-c", READER, str(src), str(root / "warehouse.duckdb"), "600"],
            stdout=subprocess.PIPE,
            text=True,
        )
    published: list[tuple[float, int]] = []  # (time, messages published so far)
    if steady:
        chunk = max(1, rate // 100)
        for start in range(0, total, chunk):
            due = (start / rate) - (time.time() - published[0][0]) if published else 0.0
            if due > 0:
                time.sleep(due)
            _publish(url, chunk, start=start)
            published.append((time.time(), start + chunk))
    result = json.loads(consumer.stdout.readline())
    consumer.wait()
    figures = {"consume": result["rows"] / result["seconds"]}
    turns = result.get("turns") or {}  # the code before turns logs none
    figures["turns"] = len(turns.get("write", []))
    for what in ("write", "checkpoint", "wait"):
        figures[f"{what}_p50"] = _pct(turns.get(what, []), 0.5)
        figures[f"{what}_p99"] = _pct(turns.get(what, []), 0.99)
        figures[f"{what}_max"] = max(turns.get(what, []), default=float("nan"))
    figures["read_turn"] = max(turns.get("read", []), default=float("nan"))
    if poller is not None:
        poller.terminate()
        out, _ = poller.communicate()
        polls = [json.loads(line) for line in out.splitlines() if line.strip()]
        good = [p for p in polls if "ms" in p]
        figures["query_p50"] = _pct([p["ms"] for p in good], 0.5)
        figures["query_p99"] = _pct([p["ms"] for p in good], 0.99)
        figures["open_p50"] = _pct([p["open"] for p in good], 0.5)
        figures["open_p99"] = _pct([p["open"] for p in good], 0.99)
        figures["failed"] = len(polls) - len(good)
        errors = {p["error"][:70] for p in polls if "error" in p}
        if errors:
            print(f"{src}: reader errors: {sorted(errors)}", file=sys.stderr)
        figures["polls"] = len(polls)
        counts = [p["n"] for p in good]
        figures["backwards"] = sum(1 for a, b in zip(counts, counts[1:], strict=False) if b < a)
        if steady:
            latencies = []
            start = next((p["t"] for p in good if p["n"] > table_rows + (1 if table_rows else 0)), None)
            for at, upto in published:
                if start is None or at < start:
                    continue  # published before the stream wrote its first row
                upto += table_rows + (1 if table_rows else 0)
                seen = next((p["t"] for p in good if p["t"] >= at and p["n"] >= upto), None)
                if seen is not None:
                    latencies.append((seen - at) * 1000)
            figures["visible_p50"] = _pct(latencies, 0.5)
            figures["visible_p99"] = _pct(latencies, 0.99)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--baseline-ref", help="a commit of this repository to measure as the baseline")
    parser.add_argument("--table-rows", type=int, default=0, help="rows in the table before the stream")
    args = parser.parse_args()
    if args.smoke:
        args.messages, args.rate, args.seconds = 300, 300, 1.0
        args.table_rows = min(args.table_rows, 2_000)
    sys.path.insert(0, str(ROOT / "src"))
    from inferline.examples import iris

    with tempfile.TemporaryDirectory(prefix="inferline-bench-warehouse-") as tmp:
        root = Path(tmp)
        iris.build(str(root))
        trees = {"now": ROOT / "src"}
        if args.baseline_ref:
            base = root / "baseline"
            base.mkdir()
            archive = subprocess.run(
                ["git", "-C", str(ROOT), "archive", args.baseline_ref, "src"], capture_output=True, check=True
            )
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
            trees = {f"before ({args.baseline_ref})": base / "src", **trees}
        rows = []
        fill = args.table_rows
        for name, src in trees.items():
            alone = run_variant(
                src, root, messages=args.messages, reader=False, rate=0, seconds=0, table_rows=fill
            )
            read = run_variant(
                src, root, messages=args.messages, reader=True, rate=0, seconds=0, table_rows=fill
            )
            steady = run_variant(
                src, root, messages=0, reader=True, rate=args.rate, seconds=args.seconds, table_rows=fill
            )
            rows.append((name, alone, read, steady))
    print(
        f"warehouse: {args.messages:,} messages consumed into a table of {args.table_rows:,} rows; "
        "a reader polls count(*) every 200 ms"
    )
    print(
        f"{'code':<22} {'alone/s':>9} {'w/ reader/s':>11} {'failed':>7} {'back':>5} "
        f"{'query p50':>9} {'p99':>7} {'visible p50':>11} {'p99':>7} {'query@1k/s p50':>14} {'p99':>7}"
    )
    for name, alone, read, steady in rows:
        failed = f"{read['failed'] + steady['failed']:.0f}/{read['polls'] + steady['polls']:.0f}"
        print(
            f"{name:<22} {alone['consume']:>9,.0f} {read['consume']:>11,.0f} {failed:>7} "
            f"{read['backwards'] + steady['backwards']:>5.0f} "
            f"{read['query_p50']:>9.1f} {read['query_p99']:>7.1f} "
            f"{steady['visible_p50']:>11.1f} {steady['visible_p99']:>7.1f} "
            f"{steady['query_p50']:>14.1f} {steady['query_p99']:>7.1f}"
        )
    print(
        "\nwhere the time goes (ms; write turn: the writer holds the file, from its ATTACH to its "
        "DETACH; wait: for its turn; open: the reader's wait + ATTACH; key hashes: the read turn "
        "at the stream's open)"
    )
    print(
        f"{'code':<22} {'run':<9} {'turns':>6} {'turn p50':>8} {'p99':>7} {'max':>8} {'ckpt p50':>8} "
        f"{'p99':>6} {'wait p99':>8} {'open p50':>8} {'p99':>7} {'key hashes':>10}"
    )
    for name, *runs in rows:
        for run, figures in zip(("alone", "w/ reader", "1k/s"), runs, strict=True):
            nan = float("nan")
            print(
                f"{name:<22} {run:<9} {figures['turns']:>6.0f} {figures['write_p50']:>8.1f} "
                f"{figures['write_p99']:>7.1f} {figures['write_max']:>8.1f} "
                f"{figures['checkpoint_p50']:>8.1f} {figures['checkpoint_p99']:>6.1f} "
                f"{figures['wait_p99']:>8.1f} "
                f"{figures.get('open_p50', nan):>8.1f} {figures.get('open_p99', nan):>7.1f} "
                f"{figures['read_turn']:>10.1f}"
            )


if __name__ == "__main__":
    main()
