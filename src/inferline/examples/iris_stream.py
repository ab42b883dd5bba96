"""Iris rows as JSON messages, for the streaming example, tests and benchmark.

Each message looks like `{"id": 3, "feature": [5.1, 3.5, 1.4, 0.2], "target": 0}`; ids
count up from `start` and the flowers repeat every 150 messages.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from inferline.errors import require


def messages(count: int, *, start: int = 0) -> Iterator[dict[str, Any]]:
    """`count` iris messages with ids `start`, `start + 1`, ...

    Example:
        >>> next(messages(1))
        {'id': 0, 'feature': [5.1, 3.5, 1.4, 0.2], 'target': 0}
    """
    datasets: Any = require("sklearn.datasets", "sklearn")
    iris = datasets.load_iris()
    rows = [[round(float(v), 1) for v in row] for row in iris.data]
    targets = [int(t) for t in iris.target]
    for i in range(start, start + count):
        yield {"id": i, "feature": rows[i % len(rows)], "target": targets[i % len(rows)]}


def write_jsonl(path: str, count: int, *, start: int = 0) -> str:
    """Write `count` iris messages to `path`, one JSON object a line; returns `path`."""
    with open(path, "w", encoding="utf-8") as handle:
        for message in messages(count, start=start):
            handle.write(json.dumps(message) + "\n")
    return path
