"""Opening the embedded queue: many processes and threads creating one new file at once."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from inferline.io.topics.embedded import EmbeddedTopic, _while_busy
from tests.conftest import FakeClock

PROCESSES = 8
ROUNDS = 50


def open_publish_consume(url: str, name: str) -> None:
    topic = EmbeddedTopic(url, "iris")
    topic.open()
    try:
        topic.publish([name.encode()])
        consumer = topic.consumer("g", name)
        consumer.close()
    finally:
        topic.close()


def open_new_queues(folder: str, worker: int, barrier: Any, errors: Any) -> None:
    """One of PROCESSES workers: every round, all of them open the same new queue at once."""
    for round_ in range(ROUNDS):
        barrier.wait(timeout=60)
        try:
            open_publish_consume(f"{folder}/q{round_}.db", f"c{worker}")
        except Exception as exc:
            errors.put(f"round {round_}, process {worker}: {exc!r}")
    errors.put(None)


def counts(url: str) -> tuple[int, int, str]:
    con = sqlite3.connect(url)
    try:
        (messages,) = con.execute("SELECT count(*) FROM messages").fetchone()
        (cursors,) = con.execute("SELECT count(*) FROM cursors").fetchone()
        (mode,) = con.execute("PRAGMA journal_mode").fetchone()
    finally:
        con.close()
    return int(messages), int(cursors), str(mode)


def test_eight_processes_open_a_new_queue_at_once_fifty_times(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    errors = context.Queue()
    workers = [
        context.Process(target=open_new_queues, args=(str(tmp_path), n, barrier, errors))
        for n in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    try:
        reported: list[str] = []
        finished = 0
        while finished < PROCESSES:
            item = errors.get(timeout=120)
            if item is None:
                finished += 1
            else:
                reported.append(item)
    finally:
        for worker in workers:
            worker.join(30)
            if worker.is_alive():
                worker.kill()
    assert reported == []
    assert [w.exitcode for w in workers] == [0] * PROCESSES
    for round_ in range(ROUNDS):
        assert counts(str(tmp_path / f"q{round_}.db")) == (PROCESSES, 1, "wal")


def test_four_threads_open_a_new_queue_at_once(tmp_path: Path) -> None:
    reported: list[str] = []
    for round_ in range(30):
        url = str(tmp_path / f"q{round_}.db")
        barrier = threading.Barrier(4)

        def run(name: str, url: str = url, barrier: threading.Barrier = barrier) -> None:
            barrier.wait(timeout=60)
            try:
                open_publish_consume(url, name)
            except Exception as exc:
                reported.append(repr(exc))

        threads = [threading.Thread(target=run, args=(f"c{n}",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert counts(url) == (4, 1, "wal")
    assert reported == []


def locked() -> sqlite3.OperationalError:
    exc = sqlite3.OperationalError("database is locked")
    exc.sqlite_errorcode = sqlite3.SQLITE_BUSY
    return exc


def test_a_busy_step_is_retried_with_backoff_until_it_succeeds(fake_clock: FakeClock) -> None:
    calls: list[int] = []

    def step() -> None:
        calls.append(1)
        if len(calls) < 4:
            raise locked()

    _while_busy(step, 10.0, clock=fake_clock, sleep=fake_clock.sleep)
    assert len(calls) == 4
    assert fake_clock.sleeps == [0.005, 0.01, 0.02]


def test_a_step_busy_past_the_deadline_fails(fake_clock: FakeClock) -> None:

    def step() -> None:
        raise locked()

    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        _while_busy(step, 1.0, clock=fake_clock, sleep=fake_clock.sleep)
    assert 1.0 <= fake_clock.now < 1.2


def test_other_errors_are_not_retried(fake_clock: FakeClock) -> None:
    calls: list[int] = []

    def step() -> None:
        calls.append(1)
        raise sqlite3.OperationalError("no such table: messages")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        _while_busy(step, 10.0, clock=fake_clock, sleep=fake_clock.sleep)
    assert calls == [1] and fake_clock.sleeps == []


def test_a_new_file_in_the_middle_of_a_write_is_opened_once_the_writer_commits(tmp_path: Path) -> None:
    # Another process is writing the file, still a rollback-journal database: SQLite answers
    # the switch to WAL with "database is locked" at once, without its busy timeout.
    url = str(tmp_path / "queue.db")
    holder = sqlite3.connect(url, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE other (a)")
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("INSERT INTO other VALUES (1)")

    def commit_soon() -> None:
        time.sleep(0.3)
        holder.execute("COMMIT")

    committer = threading.Thread(target=commit_soon)
    committer.start()
    try:
        open_publish_consume(url, "c1")
    finally:
        committer.join()
        holder.close()
    assert counts(url) == (1, 1, "wal")
