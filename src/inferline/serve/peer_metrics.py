"""/metrics over every process of `serve --processes N`, not only the one that answers.

Each inference process keeps its own counters (its requests, batches, queue). The main
process holds one pipe per inference process; on a scrape it asks each for its metrics text
(`answer_metrics` runs a thread in the inference process that renders on request) and adds
the samples up with its own (`merge`): counters, histograms and totals are summed; the
loaded-versions gauge is the same in every process and `_created` times are the earliest, so
those take the maximum and minimum. A process that does not answer within `TIMEOUT_S` is left
out and counted in `inferline_metrics_processes_missing`.

Example:
    >>> ours, theirs = multiprocessing.Pipe()  # doctest: +SKIP
    >>> answer_metrics(theirs, metrics.render)  # in the inference process  # doctest: +SKIP
    >>> merge([metrics.render(), *ask(peers)])  # in the main one  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("inferline.serve")

TIMEOUT_S = 5.0
SAME_IN_EVERY_PROCESS = frozenset({"inferline_model_version_loaded"})
MISSING = "inferline_metrics_processes_missing"


def answer_metrics(connection: Connection, render: Callable[[], bytes]) -> None:
    """In an inference process: a thread answering each request on `connection` with `render()`."""

    def serve() -> None:
        while True:
            try:
                connection.recv_bytes()
                connection.send_bytes(render())
            except (EOFError, OSError):  # the main process is gone
                return

    threading.Thread(target=serve, name="inferline-metrics", daemon=True).start()


class PeerMetrics:
    """The main process's side: ask every inference process for its metrics text."""

    def __init__(self, connections: list[Connection]) -> None:
        self.connections = connections
        self._lock = threading.Lock()  # one scrape at a time on the pipes

    def ask(self) -> tuple[list[bytes], int]:
        """Each process's metrics text, and how many did not answer (blocking: run on a thread)."""
        texts: list[bytes] = []
        missing = 0
        with self._lock:
            for connection in self.connections:
                try:
                    connection.send_bytes(b"metrics")
                    if not connection.poll(TIMEOUT_S):
                        raise TimeoutError(f"no answer in {TIMEOUT_S:.0f} s")
                    texts.append(connection.recv_bytes())
                except (EOFError, OSError, TimeoutError) as exc:
                    log.warning("metrics of an inference process are left out: %s", exc)
                    missing += 1
        return texts, missing


def merge(texts: Iterable[bytes], *, missing: int = 0) -> bytes:
    """Several processes' Prometheus texts as one: the sum of each sample over the processes."""
    families: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text.decode("utf-8")):
            families.setdefault(family.name, family)
            merged = values.setdefault(family.name, {})
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                seen = merged.get(key)
                if seen is None:
                    merged[key] = sample.value
                elif family.name in SAME_IN_EVERY_PROCESS:
                    merged[key] = max(seen, sample.value)
                elif sample.name.endswith("_created"):
                    merged[key] = min(seen, sample.value)
                else:
                    merged[key] = seen + sample.value
    out: list[Metric] = []
    for name, family in families.items():
        metric = Metric(name, family.documentation, family.type, family.unit)
        for (sample_name, labels), value in values[name].items():
            metric.add_sample(sample_name, dict(labels), value)
        out.append(metric)
    gone = Metric(MISSING, "Inference processes whose metrics this scrape lacks.", "gauge")
    gone.add_sample(MISSING, {}, float(missing))
    out.append(gone)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(out))
    return generate_latest(registry)


class _Fixed:
    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> list[Any]:
        return self.metrics
