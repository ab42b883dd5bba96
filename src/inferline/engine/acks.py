"""When the local engine acks a stream's batches: right after the sinks commit them, or,
with part-file sinks (`io/parts.py`), once the part holding their rows is committed.

A table or topic sink's commit is durable, so the batch is acked at once. A file sink's
rows are durable only when their part is sealed, recorded in the commit journal and renamed
into place, so their batches wait here (in order) until the parts roll: at the sinks'
`roll_*` limits, when the source waits for every batch to be acked (a suspect message is
read alone), and when the stream ends. Every part sink rolls at once, under one journal (in
the first one's directory), so a result and its batch's dead letters commit together.

Example:
    >>> acks = AckGate(source, [sink])  # doctest: +SKIP
    >>> acks.recover()  # doctest: +SKIP
    >>> acks.committed(batch.position)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any

from inferline.errors import SpecError
from inferline.io.base import Source
from inferline.io.parts import CommitJournal, PartSink

log = logging.getLogger("inferline.engine")


class AckGate:
    """Holds a stream's committed batches until the part sinks that hold their rows roll."""

    def __init__(self, source: Source, parts: list[PartSink]) -> None:
        self.source = source
        self.parts = parts
        lease = getattr(source, "lease_seconds", None)
        for sink in parts:
            if lease is not None and sink.roll_seconds >= lease / 2:
                raise SpecError(
                    f"{sink.path}: sink.options.roll_seconds ({sink.roll_seconds:g}) must be under half "
                    f"the source's lease ({lease:g} s, source.options.lease_seconds): messages waiting "
                    "that long for their part would be handed to another consumer"
                )
        self.journal = CommitJournal(parts[0].directory) if parts else None
        self._waiting: list[Any] = []

    def recover(self) -> int:
        """Finish the last run's commit and ack its messages again (a SIGKILL may have come
        between its rename and its ack); then drop parts it never committed. How many ids."""
        if self.journal is None:
            return 0
        ids = self.journal.recover()
        if ids:
            self.source.ack(ids)
        for sink in self.parts:
            sink.clean()
        return len(ids)

    def committed(self, position: Any, *, urgent: bool = False) -> None:
        """The sinks committed this batch: ack it now, or once its rows' part rolls."""
        if not self._waiting and not any(sink.unsealed for sink in self.parts):
            self.source.ack(position)  # no rows waiting in a part (a table sink, all dead letters)
            return
        self._waiting.append(position)
        self.idle(urgent=urgent)

    def idle(self, *, urgent: bool = False) -> None:
        """Roll if a part is due, or `urgent` (the source waits for its acks)."""
        if self._waiting and (urgent or any(sink.due() for sink in self.parts)):
            self.roll()

    def roll(self) -> None:
        """Seal every part sink, commit the parts and the waiting batches' ids, then ack them."""
        if not self._waiting:
            return
        renames = [rename for sink in self.parts for rename in sink.seal()]
        if renames and self.journal is not None:
            ids = [str(i) for position in self._waiting for i in (position or [])]
            self.journal.commit(renames, ids)
        waiting, self._waiting = self._waiting, []
        for position in waiting:
            self.source.ack(position)
