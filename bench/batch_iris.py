"""Batch CSV -> Parquet throughput: inferline's local engine vs raw pyarrow+predict vs Beam.

    python bench/batch_iris.py                 # 1.5M rows, Beam on 1.5M rows, RSS at 5M rows
    python bench/batch_iris.py --smoke         # tiny sizes: checks the benchmark runs

Baselines are measured in the same run on the same machine; the figures that matter are the
ratios. Beam uses RunInference + SklearnModelHandlerNumpy on the DirectRunner (named
explicitly: Beam's implicit local runner downloads a binary at run time); the `--runner beam`
row runs the same inferline spec translated to Beam, also on the DirectRunner.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from inferline.engine.local import LocalEngine  # noqa: E402
from inferline.examples.iris import FEATURES, train  # noqa: E402
from inferline.pipeline import parse_spec  # noqa: E402


def make_csv(path: Path, rows: int, seed: int = 0) -> None:
    """Iris-like rows: real flowers plus noise, written in 1M-row chunks."""
    from sklearn.datasets import load_iris

    if path.exists():
        return
    data = load_iris().data
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as handle:
        written = 0
        header = True
        while written < rows:
            n = min(1_000_000, rows - written)
            picks = data[rng.integers(0, len(data), n)] + rng.normal(0, 0.1, (n, 4))
            table = pa.table({name: np.round(picks[:, i], 2) for i, name in enumerate(FEATURES)})
            pa_csv.write_csv(table, handle, pa_csv.WriteOptions(include_header=header))
            header = False
            written += n
    os.replace(tmp, path)


def run_raw(csv: Path, model: Any, out: Path) -> float:
    start = time.perf_counter()
    table = pa_csv.read_csv(csv)
    matrix = np.column_stack([table[name].to_numpy() for name in FEATURES])
    prediction = model.predict(matrix)
    pq.write_table(table.append_column("prediction", pa.array(prediction)), out)
    return time.perf_counter() - start


def spec_for(csv: Path, model_path: Path, out: Path) -> dict[str, Any]:
    return {
        "name": "bench-iris",
        "source": {"kind": "csv", "path": str(csv)},
        "model": {"name": "iris", "uri": str(model_path), "inputs": FEATURES},
        "sink": {"kind": "parquet", "path": str(out)},
        "batch": {"max_size": 16384},
    }


def run_inferline(csv: Path, model_path: Path, out: Path) -> tuple[float, int]:
    start = time.perf_counter()
    summary = LocalEngine(parse_spec(spec_for(csv, model_path, out))).run()
    return time.perf_counter() - start, summary.rows_predicted


def run_beam(csv: Path, model_path: Path, out: Path) -> float | None:
    try:
        import apache_beam as beam
        from apache_beam.ml.inference.base import RunInference
        from apache_beam.ml.inference.sklearn_inference import ModelFileType, SklearnModelHandlerNumpy
        from apache_beam.options.pipeline_options import PipelineOptions
    except ImportError:
        return None

    def parse(line: str) -> np.ndarray:
        return np.array([float(v) for v in line.split(",")])

    handler = SklearnModelHandlerNumpy(model_uri=str(model_path), model_file_type=ModelFileType.PICKLE)
    start = time.perf_counter()
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        (
            p
            | beam.io.ReadFromText(str(csv), skip_header_lines=1)
            | beam.Map(parse)
            | RunInference(handler)
            | beam.Map(lambda r: f"{','.join(map(str, r.example))},{int(r.inference)}")
            | beam.io.WriteToText(str(out), shard_name_template="")
        )
    return time.perf_counter() - start


def run_inferline_beam(csv: Path, model_path: Path, out: Path, rows: int) -> float | None:
    """The same spec as the local engine, through `inferline run --runner beam` (DirectRunner)."""
    try:
        from inferline.engine.beam import run_beam as run_spec_on_beam
    except ImportError:
        return None
    start = time.perf_counter()
    summary = run_spec_on_beam(parse_spec(spec_for(csv, model_path, out)), ["--runner=DirectRunner"])
    assert summary.rows_predicted == rows, summary
    return time.perf_counter() - start


def peak_rss_mb(csv: Path, model_path: Path, out: Path) -> float:
    """Peak RSS of a separate process running the pipeline, as that process reports it.

    Linux's `VmHWM` is the peak of the process's own memory since it started. `ru_maxrss` is
    not: a child forked from this (by then large) benchmark process inherits the parent's RSS
    as its starting maximum, and RUSAGE_CHILDREN is the largest child so far (the Beam run).
    """
    code = (
        "import sys, json, resource; sys.path.insert(0, {!r})\n"
        "from inferline.engine.local import LocalEngine\n"
        "from inferline.pipeline import parse_spec\n"
        "LocalEngine(parse_spec(json.loads(sys.argv[1]))).run()\n"
        "try:\n"
        "    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
        "except OSError:\n"
        "    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(hwm)\n".format(str(ROOT / "src"))
    )
    import json

    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec_for(csv, model_path, out))],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(result.stdout.split()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_500_000)
    parser.add_argument("--beam-rows", type=int, default=1_500_000)
    parser.add_argument("--rss-rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N for raw and inferline")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to check the benchmark runs")
    parser.add_argument("--no-beam", action="store_true")
    parser.add_argument("--data", default=str(ROOT / "bench" / "out"))
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.beam_rows, args.rss_rows, args.repeat = 2_000, 500, 5_000, 1
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)
    from sklearn.datasets import load_iris

    iris = load_iris()
    model = train(iris.data, iris.target)
    work = Path(tempfile.mkdtemp(prefix="inferline-bench-"))
    model_path = work / "iris-1.pkl"
    model_path.write_bytes(pickle.dumps(model))
    csv = data / f"iris_{args.rows}.csv"
    make_csv(csv, args.rows)

    raw = min(run_raw(csv, model, work / "raw.parquet") for _ in range(args.repeat))
    ours_runs = [run_inferline(csv, model_path, work / "ours.parquet") for _ in range(args.repeat)]
    ours = min(t for t, _ in ours_runs)
    assert ours_runs[0][1] == args.rows, ours_runs[0]
    got = pq.read_table(work / "ours.parquet", columns=["prediction"])["prediction"].to_numpy()
    want = pq.read_table(work / "raw.parquet", columns=["prediction"])["prediction"].to_numpy()
    assert np.array_equal(np.sort(got), np.sort(want)), "inferline and raw predictions differ"

    print(f"rows: {args.rows:,}   cores: {os.cpu_count()}")
    print(f"raw pyarrow + predict + parquet : {raw:7.2f} s  {args.rows / raw:12,.0f} rows/s")
    print(f"inferline run (local engine)    : {ours:7.2f} s  {args.rows / ours:12,.0f} rows/s")
    print(f"ratio inferline/raw throughput  : {raw / ours:7.2f}x  (target >= 1.0x)")
    if not args.no_beam:
        beam_csv = data / f"iris_{args.beam_rows}.csv"
        make_csv(beam_csv, args.beam_rows)
        beam_s = run_beam(beam_csv, model_path, work / "beam.csv")
        if beam_s is None:
            print("beam: apache-beam not installed (pip install 'inferline[beam]')")
        else:
            ours_beam_size = ours * args.beam_rows / args.rows
            print(
                f"beam RunInference DirectRunner  : {beam_s:7.2f} s  {args.beam_rows / beam_s:12,.0f} rows/s"
            )
            print(f"ratio inferline/beam throughput : {beam_s / ours_beam_size:7.2f}x  (target >= 5x)")
        ours_on_beam = run_inferline_beam(beam_csv, model_path, work / "ours_beam.parquet", args.beam_rows)
        if ours_on_beam is not None:
            print(
                f"inferline --runner beam (Direct): {ours_on_beam:7.2f} s  "
                f"{args.beam_rows / ours_on_beam:12,.0f} rows/s"
            )
            print(f"ratio local/--runner beam       : {ours_on_beam / ours_beam_size:7.2f}x")
    rss_csv = data / f"iris_{args.rss_rows}.csv"
    make_csv(rss_csv, args.rss_rows)
    rss = peak_rss_mb(rss_csv, model_path, work / "rss.parquet")
    print(f"peak RSS, {args.rss_rows:,} rows          : {rss:7.0f} MB  (target < 1024 MB)")


if __name__ == "__main__":
    main()
