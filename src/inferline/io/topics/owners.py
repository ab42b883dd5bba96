"""Who runs a consumer: unique default names (host + pid), and whether that process is alive.

Two processes under one consumer name would each take the other's in-flight messages, so a
name is registered with the process that holds it; a second live process asking for it is
refused. A registered process on this host that no longer runs is dead for sure, so its
pending messages are taken over at once instead of after the lease.
"""

from __future__ import annotations

import os
import socket

from inferline.errors import InputError

HOST = socket.gethostname()


def default_consumer_name() -> str:
    """A consumer name no other running process has: `<host>-<pid>`.

    Example:
        >>> default_consumer_name().endswith(f"-{os.getpid()}")
        True
    """
    return f"{HOST}-{os.getpid()}"


def this_process() -> str:
    """The owner value registered for a consumer name: `<host> <pid>`."""
    return f"{HOST} {os.getpid()}"


def dead_here(owner: str | bytes | None) -> bool:
    """Whether `owner` (`<host> <pid>`) is a process on this host that no longer runs."""
    if owner is None:
        return False
    text = owner.decode() if isinstance(owner, bytes) else owner
    host, _, pid = text.rpartition(" ")
    if host != HOST or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


def refuse_if_taken(topic: str, group: str, name: str, owner: str | bytes | None) -> None:
    """Raises if `owner` (the name's registered process) is another live process."""
    if owner is None:
        return
    text = owner.decode() if isinstance(owner, bytes) else owner
    if text == this_process() or dead_here(text):
        return
    host, _, pid = text.rpartition(" ")
    raise InputError(
        f"topic {topic}: consumer name {name!r} of group {group!r} is in use by process {pid} on "
        f"{host}; give each process its own source.options.consumer, or leave it out for a unique one"
    )
