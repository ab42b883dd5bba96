"""SQL inference: `SELECT predict('iris', ...)` on DuckDB vs raw `model.predict` on the same array.

    python bench/sql.py            # 1.5M rows
    python bench/sql.py --smoke    # 20k rows: checks the benchmark runs

Both sides predict the same 1.5M x 4 float64 array with the same scikit-learn SVC, in the
same run. The ratio is raw time / SQL time (>= 1.0: SQL is at least as fast as calling the
model yourself; DuckDB runs the Arrow UDF on chunks from several threads). ML.PREDICT
(the BigQuery-ML path) is timed too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import inferline.sql  # noqa: E402
from inferline.examples.iris import FEATURES, save_joblib, train  # noqa: E402


def make_features(rows: int, seed: int = 0) -> np.ndarray:
    """Iris-like rows: real flowers plus noise."""
    from sklearn.datasets import load_iris

    data = load_iris().data
    rng = np.random.default_rng(seed)
    return np.round(data[rng.integers(0, len(data), rows)] + rng.normal(0, 0.1, (rows, 4)), 2)


def best_of(repeats: int, fn: object) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_500_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="20k rows, one repeat")
    args = parser.parse_args()
    rows, repeats = (20_000, 1) if args.smoke else (args.rows, args.repeats)

    from sklearn.datasets import load_iris

    iris = load_iris()
    model = train(iris.data, iris.target)
    matrix = make_features(rows)
    with tempfile.TemporaryDirectory(prefix="inferline-bench-sql-") as tmp:
        path = str(Path(tmp) / "iris-1.joblib")
        save_joblib(model, path)
        con = inferline.sql.connect()
        con.sql(f"CREATE MODEL iris OPTIONS(model_type='sklearn', model_path='{path}')")
        con.raw.register("features", pa.table({name: matrix[:, i] for i, name in enumerate(FEATURES)}))
        con.raw.execute("CREATE TABLE flowers AS SELECT * FROM features")
        columns = ", ".join(FEATURES)
        query = f"SELECT predict('iris', {columns}) AS prediction FROM flowers"
        ml_query = f"SELECT * FROM ML.PREDICT(MODEL iris, (SELECT {columns} FROM flowers))"

        expected = model.predict(matrix)
        got = con.sql(query).to_arrow_table()  # type: ignore[union-attr]
        if not np.array_equal(np.sort(got.column(0).to_numpy()), np.sort(expected.astype(np.float64))):
            raise SystemExit("SQL predictions differ from model.predict")

        raw = best_of(repeats, lambda: model.predict(matrix))
        sql = best_of(repeats, lambda: con.sql(query).to_arrow_table())  # type: ignore[union-attr]
        ml = best_of(repeats, lambda: con.sql(ml_query).to_arrow_table())  # type: ignore[union-attr]
        con.close()

    print(f"rows: {rows:,}  (best of {repeats})")
    print(f"raw model.predict:          {raw:7.3f} s  {rows / raw:12,.0f} rows/s")
    print(f"SELECT predict('iris', ...): {sql:7.3f} s  {rows / sql:12,.0f} rows/s")
    print(f"ML.PREDICT(MODEL iris, ...): {ml:7.3f} s  {rows / ml:12,.0f} rows/s")
    print(f"ratio predict() vs raw (raw time / SQL time, target >= 1.0): {raw / sql:.2f}")
    print(f"ratio ML.PREDICT vs raw: {raw / ml:.2f}")


if __name__ == "__main__":
    main()
