"""SQL training: `CREATE MODEL ... AS SELECT` through inferline's SQL vs the same fit called
directly on the same Arrow data.

    python bench/train.py            # 1M rows: linear_reg, logistic_reg, boosted_tree_classifier
    python bench/train.py --smoke    # 2k rows: checks the benchmark runs

The table (6 numbers, 2 strings of 8 values, a numeric and a binary label) is in a DuckDB
file. The SQL side runs `CREATE OR REPLACE MODEL ... AS SELECT * EXCEPT (...) FROM t` on
`inferline.sql.connect` (what `inferline sql` runs: the query to Arrow, BigQuery's automatic
preprocessing, the fit, the ML.* facts, skops, the model store). The direct side starts from
the same table already in memory as Arrow and fits the same scikit-learn Pipeline
(`to_pandas()`, ColumnTransformer, LinearRegression / LogisticRegression) or XGBoost
(`xgb.train` on the same label-encoded matrix, 20 rounds, depth 6, with each round's training
loss as ML.TRAINING_INFO has it; the plain `xgb.train` without it is timed beside, for
comparison). The ratio is direct time /
SQL time (>= 0.9: SQL, conversion and storage cost at most ~10%): the runs alternate (which
side goes first too) and the median of the per-pair ratios is reported with the load average.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import inferline.sql  # noqa: E402

NUMBERS = [f"x{i}" for i in range(6)]
STRINGS = ["colour", "city"]


def make_table(rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    columns: dict[str, Any] = {name: rng.normal(size=rows) for name in NUMBERS}
    colour = rng.integers(0, 8, rows)
    city = rng.integers(0, 8, rows)
    columns["colour"] = np.array([f"colour_{i}" for i in range(8)], dtype=object)[colour]
    columns["city"] = np.array([f"city_{i}" for i in range(8)], dtype=object)[city]
    value = sum((i + 1) * columns[n] for i, n in enumerate(NUMBERS)) + colour - city + rng.normal(size=rows)
    columns["y"] = value
    columns["label"] = np.where(value + rng.normal(0, 3, rows) > 0, "yes", "no")
    return pa.table(columns)


def direct_fit(table: pa.Table, model_type: str, *, per_round_loss: bool = True) -> None:
    """The same fit, called directly on the Arrow table. XGBoost is asked for each round's
    training loss (what ML.TRAINING_INFO reports, as BigQuery's) unless `per_round_loss` is
    False: the plain `xgb.train`, shown beside for comparison."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    frame = table.to_pandas()
    trees = model_type.startswith("boosted")
    numbers = Pipeline(
        [("impute", SimpleImputer(strategy="mean"))] + ([] if trees else [("scale", StandardScaler())])
    )
    encoder: Any = OrdinalEncoder() if trees else OneHotEncoder(handle_unknown="ignore", sparse_output=False)
    preprocess = ColumnTransformer([("numbers", numbers, NUMBERS), ("strings", encoder, STRINGS)])
    if model_type == "linear_reg":
        Pipeline([("preprocess", preprocess), ("model", LinearRegression())]).fit(frame, frame["y"])
    elif model_type == "logistic_reg":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = LogisticRegression(C=np.inf, max_iter=100)
            Pipeline([("preprocess", preprocess), ("model", model)]).fit(frame, frame["label"])
    else:
        import xgboost as xgb

        x = preprocess.fit_transform(frame)
        label = (frame["label"] == "yes").to_numpy(dtype=np.float64)
        params = {"eta": 0.3, "max_depth": 6, "lambda": 1.0, "tree_method": "hist", "seed": 0,
                  "objective": "binary:logistic", "eval_metric": "logloss"}  # fmt: skip
        train = xgb.DMatrix(x, label=label)
        evals = [(train, "train")] if per_round_loss else []
        xgb.train(params, train, num_boost_round=20, evals=evals, evals_result={}, verbose_eval=False)


STATEMENTS = {
    "linear_reg": "CREATE OR REPLACE MODEL ds.m OPTIONS(model_type='linear_reg', input_label_cols=['y'], "
    "data_split_method='NO_SPLIT') AS SELECT * EXCEPT (label) FROM t",
    "logistic_reg": "CREATE OR REPLACE MODEL ds.m OPTIONS(model_type='logistic_reg', "
    "input_label_cols=['label'], data_split_method='NO_SPLIT') AS SELECT * EXCEPT (y) FROM t",
    "boosted_tree_classifier": "CREATE OR REPLACE MODEL ds.m OPTIONS(model_type='boosted_tree_classifier', "
    "input_label_cols=['label'], data_split_method='NO_SPLIT', early_stop=FALSE) "
    "AS SELECT * EXCEPT (y) FROM t",
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="2k rows, one repeat")
    parser.add_argument("--types", default=",".join(STATEMENTS), help="model types, comma-separated")
    args = parser.parse_args()
    rows, repeats = (2_000, 1) if args.smoke else (args.rows, args.repeats)
    with tempfile.TemporaryDirectory(prefix="inferline-bench-train-") as folder:
        db = str(Path(folder) / "bench.duckdb")
        table = make_table(rows)
        with duckdb.connect(db) as con:
            con.register("generated", table)
            con.execute("CREATE TABLE t AS SELECT * FROM generated")
        print(f"{rows:,} rows, {len(NUMBERS)} numbers + {len(STRINGS)} strings of 8 values")
        types = args.types.split(",")
        # Imports (scikit-learn, XGBoost, skops) happen once per process: not timed on either side
        # (a smoke run's figures mean nothing: it skips the warm-up, as long as the run itself).
        warm = str(Path(folder) / "warm.duckdb")
        with duckdb.connect(warm) as con:
            con.register("generated", make_table(2_000))
            con.execute("CREATE TABLE t AS SELECT * FROM generated")
        for model_type in [] if args.smoke else types:
            with inferline.sql.connect(warm, store=str(Path(folder) / "warm_store")) as con:
                con.sql(STATEMENTS[model_type])
            direct_fit(make_table(2_000), model_type)
        for model_type in types:
            times: dict[str, list[float]] = {"sql": [], "direct": []}
            if model_type.startswith("boosted"):
                times["plain"] = []  # xgb.train without the per-round training loss
            loads = [os.getloadavg()[0]]
            for i in range(repeats):  # interleaved, a different side first each time
                sides = list(times)
                for side in sides[i % len(sides) :] + sides[: i % len(sides)]:
                    start = time.perf_counter()
                    if side == "sql":
                        with inferline.sql.connect(db, store=str(Path(folder) / "store")) as con:
                            start = time.perf_counter()
                            con.sql(STATEMENTS[model_type])
                    else:
                        direct_fit(table, model_type, per_round_loss=side == "direct")
                    times[side].append(time.perf_counter() - start)
                loads.append(os.getloadavg()[0])
            ratios = [d / s for s, d in zip(times["sql"], times["direct"], strict=True)]
            line = (
                f"{model_type:>24}: SQL {statistics.median(times['sql']):7.2f} s, direct "
                f"{statistics.median(times['direct']):7.2f} s (medians of {repeats}) -> median ratio "
                f"{statistics.median(ratios):.2f}x [{', '.join(f'{r:.2f}' for r in ratios)}]"
            )
            if "plain" in times:
                plain = [d / s for s, d in zip(times["sql"], times["plain"], strict=True)]
                line += (
                    f"; plain xgb.train {statistics.median(times['plain']):.2f} s -> "
                    f"{statistics.median(plain):.2f}x [{', '.join(f'{r:.2f}' for r in plain)}]"
                )
            print(f"{line}, load {min(loads):.1f}-{max(loads):.1f}")


if __name__ == "__main__":
    main()
