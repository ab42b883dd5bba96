"""Where the CLI's log lines go: one plain line each on stderr."""

from __future__ import annotations

import logging
import sys


def log_to_stderr() -> None:
    """Model swaps, broker outages (INFO/WARNING) of a running command, one line each on stderr.

    Example:
        >>> log_to_stderr()
    """
    logger = logging.getLogger("inferline")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
