"""Progress and a summary of a training CREATE MODEL, as log lines (the CLI prints them on
stderr): what is trained on how many rows, the loss every few seconds while an iterative
model (XGBoost rounds) trains, then the iterations, losses, time and where the model went.

Example:
    >>> report = TrainingReport("CREATE MODEL ds.m", clock=lambda: 0.0)
    >>> report.iteration(1, {"train": 0.5})  # the first round is always told
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("inferline.sql")
EVERY_SECONDS = 2.0


class TrainingReport:
    """Tells how training goes; `clock` is injectable for tests."""

    def __init__(
        self, where: str, *, clock: Callable[[], float] = time.monotonic, rounds: int | None = None
    ) -> None:
        self.where = where
        self.clock = clock
        self.rounds = rounds
        self._next = clock()

    def start(self, model_type: str, training_rows: int, evaluation_rows: int) -> None:
        held = f" ({evaluation_rows:,} held out for evaluation)" if evaluation_rows else ""
        log.info("%s: training %s on %s rows%s", self.where, model_type, f"{training_rows:,}", held)
        self._next = self.clock()

    def iteration(self, number: int, losses: dict[str, float]) -> None:
        """After each iteration; logs at most one line every EVERY_SECONDS."""
        now = self.clock()
        if now < self._next:
            return
        self._next = now + EVERY_SECONDS
        of = f"/{self.rounds}" if self.rounds else ""
        log.info("%s: iteration %d%s, %s", self.where, number, of, _losses(losses))

    def finish(self, summary: dict[str, Any], info: list[dict[str, Any]], uri: str) -> None:
        last = info[-1] if info else {}
        losses = {"train": last.get("loss"), "eval": last.get("eval_loss")}
        log.info(
            "%s: trained on %s rows in %.2f s, %d iteration%s, %s; stored as %s",
            self.where,
            f"{summary['training_rows']:,}",
            summary["seconds"],
            len(info),
            "" if len(info) == 1 else "s",
            _losses(losses),
            uri,
        )


def _losses(losses: dict[str, Any]) -> str:
    named = {"train": "loss", "eval": "eval loss"}
    parts = [f"{named.get(k, k)} {v:.4g}" for k, v in losses.items() if v is not None]
    return ", ".join(parts) or "no loss"
