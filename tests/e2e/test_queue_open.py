"""Several `inferline publish` processes started at once on a queue file that does not exist yet."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

from tests.conftest import subprocess_env

PUBLISHERS = 4
MESSAGES = 50


def test_publishers_started_together_create_one_queue_and_lose_nothing(tmp_path: Path) -> None:
    for n in range(PUBLISHERS):
        lines = [
            json.dumps({"id": n * MESSAGES + i, "feature": [5.1, 3.5, 1.4, 0.2]}) for i in range(MESSAGES)
        ]
        (tmp_path / f"part{n}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inferline",
                "publish",
                "iris",
                "--url",
                "queue.db",
                "--from",
                f"part{n}.jsonl",
            ],
            cwd=tmp_path,
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(PUBLISHERS)
    ]
    results = [(p.wait(120), *p.communicate()) for p in processes]
    assert [code for code, _, _ in results] == [0] * PUBLISHERS, results
    assert all(out.startswith(f"published {MESSAGES} messages to topic iris") for _, out, _ in results)
    con = sqlite3.connect(tmp_path / "queue.db")
    try:
        bodies = [
            json.loads(body) for (body,) in con.execute("SELECT body FROM messages WHERE topic = 'iris'")
        ]
        (mode,) = con.execute("PRAGMA journal_mode").fetchone()
    finally:
        con.close()
    assert sorted(b["id"] for b in bodies) == list(range(PUBLISHERS * MESSAGES))
    assert mode == "wal"
