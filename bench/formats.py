"""Each new model format: inferline's batch pipeline vs a hand-written batched loop.

    python bench/formats.py                      # 300,000 rows, every format installed
    python bench/formats.py --formats xgboost    # one format
    python bench/formats.py --smoke              # tiny sizes: checks the benchmark runs

The same CSV of iris-like rows goes through a 3-class model of each format, into Parquet.
The hand loop is what one writes with the framework's own API: it loads the model file,
pyarrow reads the CSV, then batches of `--batch` rows go through `Booster.inplace_predict`
(XGBoost), `Booster.predict` (LightGBM), the SavedModel's `serving_default` signature, or a
LiteRT interpreter loop (resize, set_tensor, invoke, get_tensor); labels and probabilities
are written to Parquet. inferline runs the equivalent spec in-process (`LocalEngine`), which
also loads the model file. Both are timed in the same run, alternately, `--repeat` times
each; medians are reported, and the ratio is what counts.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.csv as pa_csv  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from batch_iris import make_csv  # noqa: E402

from inferline.engine.local import LocalEngine  # noqa: E402
from inferline.examples.iris import FEATURES  # noqa: E402
from inferline.pipeline import parse_spec  # noqa: E402

Predict = Callable[[np.ndarray], np.ndarray]  # a float64 batch -> (n, 3) probabilities
Load = Callable[[Path], Predict]  # the model file -> its predict function


def training_data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    iris = load_iris()
    return iris.data.astype(np.float32), iris.target


def build_xgboost(folder: Path) -> tuple[Path, Load]:
    import xgboost as xgb

    x, y = training_data()
    booster = xgb.train({"objective": "multi:softprob", "num_class": 3}, xgb.DMatrix(x, label=y), 50)
    booster.save_model(str(folder / "iris.json"))

    def load(path: Path) -> Predict:
        model = xgb.Booster(model_file=str(path))
        return lambda batch: model.inplace_predict(batch)

    return folder / "iris.json", load


def build_lightgbm(folder: Path) -> tuple[Path, Load]:
    import lightgbm as lgb

    x, y = training_data()
    booster = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1}, lgb.Dataset(x, label=y), 50
    )
    booster.save_model(str(folder / "iris.txt"))

    def load(path: Path) -> Predict:
        model = lgb.Booster(model_file=str(path))
        return lambda batch: model.predict(batch)

    return folder / "iris.txt", load


def _saved_model(folder: Path) -> Path:
    import tensorflow as tf

    path = folder / "iris_savedmodel"
    if path.exists():
        return path
    rng = np.random.default_rng(0)

    class Dense(tf.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.w1 = tf.Variable(rng.normal(size=(4, 64)).astype(np.float32) * 0.5)
            self.w2 = tf.Variable(rng.normal(size=(64, 3)).astype(np.float32) * 0.5)

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="features")])
        def serve(self, features: Any) -> dict[str, Any]:
            hidden = tf.nn.relu(tf.matmul(features, self.w1))
            return {"probabilities": tf.nn.softmax(tf.matmul(hidden, self.w2))}

    module = Dense()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def build_tensorflow(folder: Path) -> tuple[Path, Load]:
    import tensorflow as tf

    def load(path: Path) -> Predict:
        signature = tf.saved_model.load(str(path)).signatures["serving_default"]
        return lambda batch: signature(features=tf.constant(batch, tf.float32))["probabilities"].numpy()

    return _saved_model(folder), load


def build_tflite(folder: Path) -> tuple[Path, Load]:
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    converter = tf.lite.TFLiteConverter.from_saved_model(str(_saved_model(folder)))
    path = folder / "iris.tflite"
    path.write_bytes(converter.convert())

    def load(path: Path) -> Predict:
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
        source = interpreter.get_input_details()[0]["index"]
        target = interpreter.get_output_details()[0]["index"]
        allocated = [0]

        def predict(batch: np.ndarray) -> np.ndarray:
            if allocated[0] != len(batch):
                interpreter.resize_tensor_input(source, list(batch.shape))
                interpreter.allocate_tensors()
                allocated[0] = len(batch)
            interpreter.set_tensor(source, batch.astype(np.float32))
            interpreter.invoke()
            return np.array(interpreter.get_tensor(target))

        return predict

    return path, load


BUILDERS: dict[str, Callable[[Path], tuple[Path, Load]]] = {
    "xgboost": build_xgboost,
    "lightgbm": build_lightgbm,
    "tensorflow": build_tensorflow,
    "tflite": build_tflite,
}


def run_hand_loop(csv: Path, model: Path, load: Load, out: Path, batch: int) -> float:
    start = time.perf_counter()
    predict = load(model)
    table = pa_csv.read_csv(csv)
    matrix = np.column_stack([table[name].to_numpy() for name in FEATURES])
    scores = np.concatenate([predict(matrix[i : i + batch]) for i in range(0, len(matrix), batch)])
    flat = pa.array(np.ascontiguousarray(scores, dtype=np.float64).reshape(-1))
    # The same table inferline writes: a row key, the inputs, label, probabilities, model id.
    rows = pc.cast(pa.array(np.arange(len(matrix))), pa.string())
    table = table.add_column(0, "key", pc.binary_join_element_wise(pa.scalar(f"{csv}:"), rows, ""))
    columns = {
        "prediction": pa.array(scores.argmax(axis=1)),
        "scores": pa.ListArray.from_arrays(pa.array(np.arange(0, len(flat) + 1, 3, dtype=np.int32)), flat),
        "model_id": pa.repeat(pa.scalar("iris/1"), len(matrix)),
    }
    for name, column in columns.items():
        table = table.append_column(name, column)
    pq.write_table(table, out)
    return time.perf_counter() - start


def run_inferline(csv: Path, model: Path, out: Path, batch: int) -> float:
    spec = {
        "name": "bench-formats",
        "source": {"kind": "csv", "path": str(csv)},
        "model": {"name": "iris", "uri": str(model), "inputs": FEATURES},
        "sink": {"kind": "parquet", "path": str(out)},
        "batch": {"max_size": batch},
    }
    start = time.perf_counter()
    summary = LocalEngine(parse_spec(spec)).run()
    elapsed = time.perf_counter() - start
    if summary.rows_dead:
        raise SystemExit(f"inferline dead-lettered {summary.rows_dead} rows")
    return elapsed


def median(values: list[float]) -> float:
    return float(np.median(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--batch", type=int, default=16_384)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each, alternating; medians reported")
    parser.add_argument("--formats", default=",".join(BUILDERS))
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.repeat = 2_000, 1
    with tempfile.TemporaryDirectory(prefix="inferline-bench-formats-") as tmp:
        folder = Path(tmp)
        csv = folder / "iris.csv"
        make_csv(csv, args.rows)
        print(
            f"rows: {args.rows:,}   batch: {args.batch:,}   cores: {os.cpu_count()}   "
            f"median of {args.repeat}   load average: {os.getloadavg()[0]:.1f}"
        )
        for name in args.formats.split(","):
            try:
                model, load = BUILDERS[name](folder)
            except ImportError as exc:
                print(f"{name:<11}: skipped ({exc})")
                continue
            hand: list[float] = []
            ours: list[float] = []
            # CPU seconds of the whole process (every thread): on a loaded machine, where
            # nothing overlaps, wall time follows them.
            cpu: dict[str, list[float]] = {"hand": [], "ours": []}
            for _ in range(args.repeat):
                started = time.process_time()
                hand.append(run_hand_loop(csv, model, load, folder / "hand.parquet", args.batch))
                cpu["hand"].append(time.process_time() - started)
                started = time.process_time()
                ours.append(run_inferline(csv, model, folder / "ours.parquet", args.batch))
                cpu["ours"].append(time.process_time() - started)
            got = pq.read_table(folder / "ours.parquet").column("scores").to_pylist()
            want = pq.read_table(folder / "hand.parquet").column("scores").to_pylist()
            if not np.allclose(np.array(got), np.array(want), atol=1e-5):
                raise SystemExit(f"{name}: inferline's probabilities differ from the hand loop's")
            h, o = median(hand), median(ours)
            print(
                f"{name:<11}: hand loop {h:6.2f} s {args.rows / h:>11,.0f} rows/s   "
                f"inferline {o:6.2f} s {args.rows / o:>11,.0f} rows/s   ratio {h / o:.2f}x   "
                f"CPU s: hand {median(cpu['hand']):.2f} inferline {median(cpu['ours']):.2f}"
            )
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
