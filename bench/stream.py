"""Streaming: publish iris messages, then consume them into DuckDB, per topic backend.

    python bench/stream.py             # 200,000 messages; latency at 1,000 msg/s for 20 s
    python bench/stream.py --smoke     # tiny sizes: checks the benchmark runs
    python bench/stream.py --soak 600  # only the window soak: 2,000 msg/s for 10 min, RSS sampled
    python bench/stream.py --messages 50000 --backend embedded --poison-pairs 5  # + 5 clean/poison pairs

For each backend (the embedded SQLite queue and Redis Streams on a private redis-server):
  - publish msg/s: `inferline.publish()` of all messages, as fast as it goes;
  - raw msg/s: the baseline, a bare consumer that reads and acks (no JSON, model or sink);
  - consume msg/s: `inferline run` on the backlog (JSON -> Arrow -> ONNX model -> DuckDB
    upsert, commit, ack), and its ratio to the raw baseline;
  - latency p50/p99 (publish -> committed) while a separate `inferline publish --rate` process
    feeds a steady rate;
  - 1% poison msg/s: the same run with one message in 100 poison (invalid JSON, a text or a
    null feature), which must not knock good messages off the vectorised path: its time over
    the clean run's (goal <= 1.3x);
  - windowed msg/s: the same stream (messages carry an event time, 2,000 msg/s of it) with a
    `window:` of 60 s sliding every 10 s grouped by class, count and mean score, vs the run
    without (goal >= 0.8x), and the rows the window state held at the end: partial rows per
    pane and class (count and mean are decomposable), or, for other aggregates, the rows of
    about 70 s of events; bounded by the open windows whatever the stream's length.
With `--soak SECONDS` only the window soak runs: a publisher thread sends 2,000 msg/s (event
time = publish time) for SECONDS to an `inferline run` process with the sliding window above,
whose resident memory (VmRSS) is sampled every 5 s; memory must stay flat once the first 60 s
of windows are open (bounded by the open windows, not by the stream's length).
Targets on a 2-core machine: >= 20,000 msg/s consumed (Redis), p99 < 250 ms at 1,000 msg/s.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import inferline  # noqa: E402
from inferline.engine.local import LocalEngine  # noqa: E402
from inferline.engine.windows import WindowOperator  # noqa: E402
from inferline.examples import iris, iris_stream  # noqa: E402
from inferline.io.topics import open_topic  # noqa: E402
from inferline.io.topics.publish import chunks  # noqa: E402
from inferline.pipeline import WindowSpec, parse_spec  # noqa: E402


def _spec(root: Path, url: str, topic: str, table: str) -> dict[str, object]:
    return {
        "name": "bench-stream",
        "source": {"kind": "topic", "url": url, "topic": topic},
        "model": {"name": "iris", "uri": str(root / "models" / "iris-*.onnx"), "inputs": "feature"},
        "output": {"id": "id", "predict": "prediction", "model_id": "model_id"},
        "sink": {"kind": "duckdb", "path": str(root / f"{table}.duckdb"), "table": table},
        "batch": {"max_size": 4096, "max_wait_ms": 50},
    }


EVENT_RATE = 2_000  # messages per second of event time
WINDOW = {
    "kind": "sliding",
    "size": "60s",
    "every": "10s",
    "time": "ts",
    "group_by": ["predict"],
    "aggregates": {"n": "count(*)", "mean_score": "avg(score)"},
}


def _timed_messages(count: int) -> list[bytes]:
    start = 1_780_000_000.0
    return [
        json.dumps({**m, "ts": start + i / EVENT_RATE}).encode()
        for i, m in enumerate(iris_stream.messages(count))
    ]


def windowed(root: Path, url: str, count: int) -> tuple[float, float, int]:
    """Consume msg/s of the same timed stream without and with a sliding window; open rows left."""
    bodies = _timed_messages(count)
    rates = []
    held = 0
    for with_window in (False, True):
        topic = f"timed-{count}-{with_window}"
        inferline.publish(topic, bodies, url=url, chunk_size=5000)
        raw = _spec(root, url, topic, f"timed_{with_window}")
        raw["output"] = {"id": "id", "predict": "prediction", "score": "scores[0]", "ts": "ts"}
        if with_window:
            sink = {"kind": "duckdb", "path": str(root / "windows.duckdb"), "table": f"w_{topic}"}
            raw["window"] = {**WINDOW, "sink": sink, "state": str(root / f"{topic}.state.duckdb")}
        engine = LocalEngine(parse_spec(raw), limit=count, until_idle=10.0)
        started = time.perf_counter()
        summary = engine.run()
        rates.append(summary.rows_read / (time.perf_counter() - started))
        if with_window:
            # Partial rows per pane and group (count and mean are decomposable), as a restart reads them.
            state = WindowOperator(WindowSpec.model_validate(raw["window"]))
            state.open(str(root / f"{topic}.state.duckdb"))
            held = state.open_rows()
            state.close_state()
    return rates[0], rates[1], held


def soak(root: Path, url: str, seconds: float, rate: int) -> list[tuple[float, float, int]]:
    """`inferline run` on a windowed stream fed `rate` msg/s for `seconds`: (t, RSS MB, published)."""
    topic = "soak"
    raw = _spec(root, url, topic, "soak")
    raw["output"] = {"id": "id", "predict": "prediction", "score": "scores[0]", "ts": "ts"}
    sink = {"kind": "duckdb", "path": str(root / "soak_windows.duckdb"), "table": "soak_windows"}
    raw["window"] = {**WINDOW, "sink": sink, "state": str(root / "soak.state.duckdb")}
    spec_path = root / "soak.yaml"
    spec_path.write_text(json.dumps(raw))  # JSON is YAML
    published = [0]
    stop = threading.Event()

    def timed() -> Iterator[dict[str, object]]:
        for message in iris_stream.messages(int(seconds * rate) + rate):
            if stop.is_set():
                return
            yield {**message, "ts": time.time()}

    def feed() -> None:
        for chunk in chunks(timed(), rate // 10):
            published[0] += inferline.publish(topic, chunk, url=url, rate=None)
            wait = (published[0] / rate) - (time.monotonic() - started)
            if wait > 0:
                time.sleep(wait)
            if time.monotonic() - started >= seconds:
                return

    consumer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inferline",
            "run",
            str(spec_path),
            "--until-idle",
            "15",
            "--no-progress",
            "--stats-every",
            "60",
        ],
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
        cwd=root,
    )
    started = time.monotonic()
    publisher = threading.Thread(target=feed, daemon=True)
    publisher.start()
    samples: list[tuple[float, float, int]] = []
    try:
        while publisher.is_alive():
            samples.append((time.monotonic() - started, _rss_mb(consumer.pid), published[0]))
            print(
                f"soak t={samples[-1][0]:6.0f}s rss={samples[-1][1]:7.1f} MB published={published[0]:,}",
                flush=True,
            )
            publisher.join(timeout=5.0)
        samples.append((time.monotonic() - started, _rss_mb(consumer.pid), published[0]))
        consumer.wait(timeout=600)
    finally:
        stop.set()
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
    return samples


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return float("nan")


def raw_consume(url: str, topic: str, count: int) -> float:
    """Messages/s of a bare read + ack loop: the queue's own speed, the baseline."""
    handle = open_topic(url, topic)
    consumer = handle.consumer("raw", "raw")
    started = time.perf_counter()
    seen = 0
    while seen < count:
        messages = consumer.read(4096, timeout=1.0)
        consumer.ack([m.id for m in messages])
        seen += len(messages)
    seconds = time.perf_counter() - started
    handle.close()
    return count / seconds


def throughput(root: Path, url: str, count: int) -> dict[str, float]:
    topic = f"iris-{count}"
    started = time.perf_counter()
    inferline.publish(topic, iris_stream.messages(count), url=url, chunk_size=5000)
    published = count / (time.perf_counter() - started)
    # The bare read+ack baseline gets its own copy of the messages: a queue may drop a
    # message once every group that exists has acked it.
    inferline.publish(f"raw-{topic}", iris_stream.messages(count), url=url, chunk_size=5000)
    raw = raw_consume(url, f"raw-{topic}", count)
    spec = parse_spec(_spec(root, url, topic, "throughput"))
    started = time.perf_counter()
    summary = LocalEngine(spec, limit=count, until_idle=10.0).run()
    if summary.rows_read != count:
        raise SystemExit(f"bench: consumed {summary.rows_read:,} of {count:,} messages")
    consumed = summary.rows_read / (time.perf_counter() - started)
    plain, windows, held = windowed(root, url, count)
    return {
        "publish": published,
        "raw": raw,
        "consume": consumed,
        "poison": poisoned(root, url, count),
        "timed": plain,
        "windowed": windows,
        "held": held,
    }


_POISON = [b"not json", b'{"id": -1, "feature": "5.1,3.5,1.4,0.2"}', b'{"id": -2, "feature": null}']


def poisoned(root: Path, url: str, count: int, run: int = 0) -> float:
    """Consume msg/s when 1 message in 100 is poison (each dead-lettered on its own)."""
    topic = f"poison-{count}" + (f"-{run}" if run else "")
    bodies = [json.dumps(m).encode() for m in iris_stream.messages(count)]
    for n, i in enumerate(range(0, count, 100)):
        bodies[i] = _POISON[n % len(_POISON)]
    inferline.publish(topic, bodies, url=url, chunk_size=5000)
    spec = parse_spec(_spec(root, url, topic, f"poison_{run}" if run else "poison"))
    started = time.perf_counter()
    summary = LocalEngine(spec, limit=count, until_idle=10.0).run()
    if summary.rows_dead != len(range(0, count, 100)):
        raise SystemExit(f"bench: {summary.rows_dead:,} dead letters, expected {len(range(0, count, 100)):,}")
    return summary.rows_read / (time.perf_counter() - started)


def clean(root: Path, url: str, count: int, run: int) -> float:
    """Consume msg/s of clean messages (the poison run's partner in `poison_pairs`)."""
    topic = f"clean-{count}-{run}"
    inferline.publish(topic, iris_stream.messages(count), url=url, chunk_size=5000)
    spec = parse_spec(_spec(root, url, topic, f"clean_{run}"))
    started = time.perf_counter()
    summary = LocalEngine(spec, limit=count, until_idle=10.0).run()
    return summary.rows_read / (time.perf_counter() - started)


def poison_pairs(root: Path, url: str, count: int, pairs: int) -> list[float]:
    """Slowdowns of `pairs` clean runs each followed at once by a 1% poison run (A B A B ...)."""
    return [clean(root, url, count, run) / poisoned(root, url, count, run) for run in range(1, pairs + 1)]


def latency(root: Path, url: str, rate: int, seconds: float) -> tuple[float | None, float | None]:
    count = int(rate * seconds)
    topic = f"steady-{count}"
    path = iris_stream.write_jsonl(str(root / f"steady-{count}.jsonl"), count)
    spec = parse_spec(_spec(root, url, topic, "latency"))
    engine = LocalEngine(spec, limit=count, until_idle=10.0)
    publisher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inferline",
            "publish",
            topic,
            "--url",
            url,
            "--from",
            path,
            "--rate",
            str(rate),
        ],
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL,
    )
    try:
        summary = engine.run()
    finally:
        publisher.wait(timeout=seconds + 60)
    return summary.latency_p50_ms, summary.latency_p99_ms


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    import redis

    port = _free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                process.kill()
                raise
            time.sleep(0.02)
    client.close()
    return process, f"redis://127.0.0.1:{port}/0"


def run_soak(seconds: float, backend: str) -> None:
    with tempfile.TemporaryDirectory(prefix="inferline-bench-soak-") as tmp:
        root = Path(tmp)
        iris.build(str(root))
        redis_process = None
        if backend == "redis":
            redis_process, url = start_redis()
        else:
            url = str(root / "queue.db")
        try:
            samples = soak(root, url, seconds, EVENT_RATE)
        finally:
            if redis_process is not None:
                redis_process.kill()
                redis_process.wait()
    settled = [s for s in samples if s[0] >= 90]  # 60 s of windows + a close or two
    print(
        f"soak: {EVENT_RATE:,} msg/s for {seconds:g} s on {backend}; window {WINDOW['kind']} "
        f"{WINDOW['size']} every {WINDOW['every']}; consumer RSS (MB):"
    )
    picks = [samples[0], *(settled[:1]), *(settled[len(settled) // 2 : len(settled) // 2 + 1]), samples[-1]]
    for t, rss, sent in picks:
        print(f"  t={t:6.0f}s  rss={rss:7.1f}  published={sent:,}")
    if settled:
        values = [rss for _, rss, _ in settled]
        print(
            f"  after 90 s: min {min(values):.1f}  max {max(values):.1f}  "
            f"end - first {settled[-1][1] - settled[0][1]:+.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--rate", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the steady-rate run")
    parser.add_argument("--backend", choices=["embedded", "redis", "both"], default="both")
    parser.add_argument("--soak", type=float, metavar="SECONDS", help="only the window soak, this long")
    parser.add_argument(
        "--poison-pairs",
        type=int,
        default=0,
        metavar="N",
        help="then N more clean / 1%% poison pairs, each pair run back to back; their median slowdown",
    )
    args = parser.parse_args()
    if args.soak:
        run_soak(args.soak, "redis" if args.backend == "redis" else "embedded")
        return
    if args.smoke:
        args.messages, args.rate, args.seconds = 500, 300, 1.0
    with tempfile.TemporaryDirectory(prefix="inferline-bench-stream-") as tmp:
        root = Path(tmp)
        iris.build(str(root))
        backends = ["embedded", "redis"] if args.backend == "both" else [args.backend]
        rows = []
        for backend in backends:
            redis_process = None
            if backend == "redis":
                redis_process, url = start_redis()
            else:
                url = str(root / "queue.db")
            try:
                figures = throughput(root, url, args.messages)
                p50, p99 = latency(root, url, args.rate, args.seconds)
                pairs = poison_pairs(root, url, args.messages, args.poison_pairs)
            finally:
                if redis_process is not None:
                    redis_process.kill()
                    redis_process.wait()
            rows.append((backend, figures, p50, p99, pairs))
    print(f"stream: {args.messages:,} iris messages; latency at {args.rate:,} msg/s for {args.seconds:g} s")
    print(
        f"{'backend':<10} {'publish/s':>10} {'raw/s':>10} {'consume/s':>10} {'vs raw':>7} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'1% poison/s':>12} {'slowdown':>9} "
        f"{'timed/s':>9} {'windowed/s':>10} {'ratio':>6} {'open rows':>9}"
    )
    for backend, f, p50, p99, _ in rows:
        print(
            f"{backend:<10} {f['publish']:>10,.0f} {f['raw']:>10,.0f} {f['consume']:>10,.0f} "
            f"{f['consume'] / f['raw']:>7.2f} {p50 or 0:>7.1f} {p99 or 0:>7.1f} "
            f"{f['poison']:>12,.0f} {f['consume'] / f['poison']:>8.2f}x "
            f"{f['timed']:>9,.0f} {f['windowed']:>10,.0f} "
            f"{f['windowed'] / f['timed']:>5.2f}x {f['held']:>9,.0f}"
        )

    for backend, *_, pairs in rows:
        if pairs:
            shown = " ".join(f"{x:.2f}x" for x in pairs)
            print(
                f"{backend}: 1% poison slowdown over {len(pairs)} back-to-back pairs: median "
                f"{statistics.median(pairs):.2f}x ({shown})"
            )


if __name__ == "__main__":
    main()
