"""Tree models' calls side by side share the cores (one thread each); a call alone keeps the
library's threads. Checked with a fake booster that records what it was asked, and against
XGBoost's and LightGBM's own predictions."""

from __future__ import annotations

import json
import threading
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris

from inferline.models.trees import TreeHandler, TreeModel

X, Y = load_iris(return_X_y=True)


class _Recording(TreeHandler):
    framework = module = wrappers = kind = "fake"

    def __init__(self, barrier: threading.Barrier | None = None) -> None:
        super().__init__()
        self.barrier = barrier
        self.threads: list[int | None] = []

    def raw_values(self, model: TreeModel, inputs: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        self.threads.append(threads)
        if self.barrier is not None:
            self.barrier.wait()  # both calls are inside here at once
        return np.zeros(len(inputs))


def _model() -> TreeModel:
    return TreeModel(object(), objective="reg", features=4, names=None, classes=None)


def test_a_call_alone_keeps_the_librarys_threads_and_calls_side_by_side_take_one_each() -> None:
    alone = _Recording()
    alone.predict(_model(), X)
    alone.predict(_model(), X)
    assert alone.threads == [None, None]
    together = _Recording(threading.Barrier(2, timeout=30))
    workers = [threading.Thread(target=together.predict, args=(_model(), X)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    # The first one in started alone; the second saw it running and took one thread.
    assert sorted(together.threads, key=str) == [1, None]


def test_xgboost_on_one_thread_is_a_copy_that_predicts_the_same() -> None:
    xgb = pytest.importorskip("xgboost")
    from inferline.models.xgboost import XGBoostHandler, _threaded, booster_model

    booster = xgb.train({"objective": "multi:softprob", "num_class": 3}, xgb.DMatrix(X, label=Y), 8)
    model = booster_model(booster)
    handler = XGBoostHandler()
    np.testing.assert_array_equal(handler.raw_values(model, X, threads=1), handler.raw_values(model, X))

    def nthread(b: Any) -> str:
        return str(json.loads(b.save_config())["learner"]["generic_param"]["nthread"])

    copy = _threaded(model, 1)
    assert copy is _threaded(model, 1) and copy is not booster
    assert nthread(copy) == "1" and nthread(booster) == "0"  # the loaded booster is left as it was


def test_lightgbm_on_one_thread_predicts_the_same() -> None:
    lgb = pytest.importorskip("lightgbm")
    from inferline.models.lightgbm import LightGBMHandler, booster_model

    booster = lgb.train(
        {"objective": "multiclass", "num_class": 3, "verbose": -1}, lgb.Dataset(X, label=Y), 8
    )
    model = booster_model(booster)
    handler = LightGBMHandler()
    np.testing.assert_array_equal(handler.raw_values(model, X, threads=1), handler.raw_values(model, X))
