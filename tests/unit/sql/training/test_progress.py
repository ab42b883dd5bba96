"""sql/training/progress.py: training tells its rows, its losses at most every 2 s, a summary."""

from __future__ import annotations

import logging

import pytest

from inferline.sql.training.progress import TrainingReport
from tests.conftest import FakeClock


def test_progress_lines_are_spaced_by_the_clock(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    report = TrainingReport("CREATE MODEL ds.m", clock=clock, rounds=50)
    with caplog.at_level(logging.INFO, logger="inferline.sql"):
        report.start("boosted_tree_classifier", 8000, 2000)
        report.iteration(1, {"train": 0.5, "eval": 0.6})
        clock.now += 1.0
        report.iteration(2, {"train": 0.4, "eval": 0.5})  # within 2 s of the last line: quiet
        clock.now += 1.5
        report.iteration(3, {"train": 0.3, "eval": 0.45})
        info = [{"loss": 0.3, "eval_loss": 0.45}] * 3
        report.finish({"training_rows": 8000, "seconds": 3.5}, info, "model_store/ds.m/1/model.skops")
    assert caplog.messages == [
        "CREATE MODEL ds.m: training boosted_tree_classifier on 8,000 rows (2,000 held out for evaluation)",
        "CREATE MODEL ds.m: iteration 1/50, loss 0.5, eval loss 0.6",
        "CREATE MODEL ds.m: iteration 3/50, loss 0.3, eval loss 0.45",
        "CREATE MODEL ds.m: trained on 8,000 rows in 3.50 s, 3 iterations, loss 0.3, eval loss 0.45; "
        "stored as model_store/ds.m/1/model.skops",
    ]
