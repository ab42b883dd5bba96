"""One family of errors: every user-facing failure is an `InferlineError`.

The CLI prints `str(error)` on one line (no traceback unless `--debug`), so messages
name the place (file, row, field, model) and what was expected.
"""

from __future__ import annotations


class InferlineError(Exception):
    """Base of every error inferline raises for bad input or configuration."""


class SpecError(InferlineError, ValueError):
    """The pipeline spec is malformed: names the file and the field."""


class InputError(InferlineError, ValueError):
    """Input data does not fit what the pipeline expects (missing column, bad file)."""


class ModelError(InferlineError, ValueError):
    """A model file is missing, corrupt, of an unknown format, or failed to predict."""


class SinkError(InferlineError, ValueError):
    """An output cannot be written, e.g. an existing table's schema conflicts."""


class SinkSchemaError(SinkError):
    """A batch's columns cannot go into the sink as it stands (a column changed type).

    The engine dead-letters that batch's rows with this message and goes on.
    """


class MissingExtraError(InferlineError, ImportError):
    """An optional dependency is not installed; names the `pip install` extra."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(f"{module} is not installed: pip install 'inferline[{extra}]'")
        self.module = module
        self.extra = extra


def require(module: str, extra: str) -> object:
    """Import `module` or raise a `MissingExtraError` naming the extra.

    Example:
        >>> np = require("numpy", "core")
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(module, extra) from exc


class SqlError(InferlineError, ValueError):
    """A SQL statement cannot be translated or run: names the statement and the construct."""


class RemoteUnavailable(ModelError):
    """A remote model's server cannot answer (down, unreachable, refusing): the whole batch fails.

    The engine dead-letters the batch for that model with this message instead of bisecting
    it row by row, which would only repeat the same failing request.
    """


class WindowError(InferlineError, ValueError):
    """A window could not be computed (a bad aggregate, a missing column, a state file)."""
