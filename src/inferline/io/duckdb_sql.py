"""DuckDB SQL text: quoted identifiers, and the root cause of a DuckDB error in one line."""

from __future__ import annotations


def quote(name: str) -> str:
    """A DuckDB identifier, quoted; `schema.table` names are quoted part by part."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in name.split("."))


_WRAPPERS = ("TransactionContext Error: ", "Failed to commit: ", "IO Error: ")


def root_cause(exc: BaseException) -> str:
    """The first line of a DuckDB error without the layers around it ("Failed to commit: ...").

    Example:
        >>> root_cause(Exception('TransactionContext Error: Failed to commit: disk full'))
        'disk full'
    """
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    stripped = True
    while stripped:
        stripped = False
        for prefix in _WRAPPERS:
            if text.startswith(prefix):
                text, stripped = text[len(prefix) :], True
    return text
