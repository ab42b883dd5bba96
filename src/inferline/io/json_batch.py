"""A micro-batch of JSON messages joined once: parse it from any message, spot likely poison.

`JsonMessages` (io/json_messages.py) parses a batch in one `pyarrow.json` call. When that
fails, `JoinedMessages` lets it parse again from any message without copying the batch, and
`suspects` finds in one vectorised pass (Arrow's RE2 over the joined bytes) the messages that
cannot fit: not a JSON object, or a known field whose value starts as another kind of JSON
value than the stream's (text where it has numbers). They are only suspects: each is judged
alone with `json.loads`, so a false alarm costs one look and a miss costs one more parse.

Example:
    >>> joined = JoinedMessages([b'{"a": 1}', b'{"a": "x"}', b"oops"])
    >>> suspects(joined, misfit_pattern({"a": pa.int64()}, []))
    [1, 2]
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

_BLOCK = 1 << 20  # pyarrow's default block; a block must hold the longest message
_NAME = re.compile(r"[A-Za-z0-9_]+")  # field names used as they are in a pattern


class JoinedMessages:
    """Message bodies (one line each) joined by newlines once."""

    def __init__(self, bodies: list[bytes]) -> None:
        self.count = len(bodies)
        self.data = pa.py_buffer(b"\n".join(bodies))
        self._starts: np.ndarray | None = None

    def parse(self, at: int, schema: pa.Schema | None) -> tuple[pa.Table | None, str | None]:
        """The messages from the `at`-th on; an error's row counts from that message."""
        if at >= self.count:
            return pa.table({}), None
        if at == 0:
            return read(self.data, schema)
        return read(self.data.slice(int(self.starts()[at])), schema)

    def starts(self) -> np.ndarray:
        """Where each message starts in `data` (bodies hold no newline), and where data ends."""
        if self._starts is None:
            ends = np.flatnonzero(np.frombuffer(self.data, dtype=np.uint8) == ord("\n"))
            self._starts = np.concatenate(([0], ends + 1, [self.data.size])).astype(np.int64)
        return self._starts

    def values(self) -> pa.Array:
        """The messages as one binary array over `data` (no copy; each keeps its newline)."""
        offsets = pa.py_buffer(self.starts())
        return pa.LargeBinaryArray.from_buffers(pa.large_binary(), self.count, [None, offsets, self.data])


def read(data: pa.Buffer, schema: pa.Schema | None) -> tuple[pa.Table | None, str | None]:
    """One `pyarrow.json` parse of `data` in one block: the table, or pyarrow's error."""
    try:
        table = pa_json.read_json(
            pa.BufferReader(data),
            # One block (it must hold the longest message anyway); no threads for one block.
            read_options=pa_json.ReadOptions(use_threads=False, block_size=max(_BLOCK, data.size + 1)),
            parse_options=pa_json.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="infer", newlines_in_values=False
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        return None, str(exc)
    return table, None


def misfit_pattern(schema: dict[str, pa.DataType], inputs: list[str]) -> str | None:
    """An RE2 pattern matching a field whose value starts as the wrong kind of JSON value.

    Typed fields take their type's kind (or null); model inputs not typed yet take a number,
    a list or null. Names that need escaping are left to pyarrow.
    """
    allowed = {name: _starts_of(t) for name, t in schema.items()}
    for name in inputs:
        allowed.setdefault(name, "-0-9\\[n")
    named = [(name, chars) for name, chars in allowed.items() if chars and _NAME.fullmatch(name)]
    alternatives = [f'"{name}"\\s*:\\s*[^{chars}\\s]' for name, chars in named]
    return "|".join(alternatives) or None


def suspects(joined: JoinedMessages, pattern: str | None) -> list[int]:
    """Positions of the messages that are not a JSON object or match `pattern`."""
    if not joined.count:
        return []
    values = joined.values()
    bad = pc.invert(pc.starts_with(values, "{"))
    if pattern is not None:
        bad = pc.or_(bad, pc.match_substring_regex(values, pattern))
    return [int(i) for i in np.flatnonzero(bad.to_numpy(zero_copy_only=False))]


def _starts_of(t: pa.DataType) -> str:
    # The first characters a JSON value of this Arrow type can have (as an RE2 class body).
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "-0-9n"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "\\[n"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return '"n'
    if pa.types.is_boolean(t):
        return "tfn"
    if pa.types.is_struct(t):
        return "{n"
    return ""
