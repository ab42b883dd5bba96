"""Executors: the local threaded engine and the Apache Beam translation."""

from __future__ import annotations

import logging


def quiet_beam_logging() -> None:
    """Call before importing apache_beam from the CLI. Its import logs a harmless `apitools not
    found` warning, and runners log a traceback for a failing DoFn; the CLI prints our own
    errors as one line, so both are dropped and other warnings kept."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_worth_showing)
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(handler)
        root.setLevel(logging.WARNING)


def _worth_showing(record: logging.LogRecord) -> bool:
    from inferline.errors import InferlineError

    if "apitools not found" in record.getMessage():
        return False
    return not (record.exc_info and isinstance(record.exc_info[1], InferlineError))
