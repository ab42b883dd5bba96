"""`json_batch`: the joined batch parses from any message; suspects are found in one pass."""

from __future__ import annotations

import pyarrow as pa

from inferline.io.json_batch import JoinedMessages, misfit_pattern, suspects


def test_a_parse_from_a_later_message_counts_rows_from_there() -> None:
    joined = JoinedMessages([b'{"a": 1}', b'{"a": 2}', b"oops", b'{"a": 4}'])
    table, error = joined.parse(1, pa.schema([("a", pa.int64())]))
    assert table is None and error is not None and error.endswith(" in row 1")
    table, error = joined.parse(3, None)
    assert error is None and table is not None and table.column("a").to_pylist() == [4]


def test_suspects_start_as_another_kind_of_value_than_the_field_has() -> None:
    pattern = misfit_pattern(
        {"n": pa.int64(), "xs": pa.list_(pa.float64()), "s": pa.string(), "b": pa.bool_()}, ["feature"]
    )
    bodies = [
        b'{"n":  5, "xs": [1.5], "s": "a", "b": true, "feature": 1}',  # fits, spaces and all
        b'{"n": null, "xs": null, "s": null, "b": null, "feature": null}',  # nulls fit
        b'{"n": "5"}',
        b'{"xs": 1.5}',
        b'{"s": 5}',
        b'{"b": 0}',
        b'{"feature": "5.1,3.5"}',  # a model input not typed yet: a number, a list or null
        b"[1, 2]",  # not an object
        b' {"n": 1}',  # a false alarm: the screen will keep it
        b'{"weird name": "x", "n": 1}',  # names that need escaping are left to pyarrow
    ]
    assert suspects(JoinedMessages(bodies), pattern) == [2, 3, 4, 5, 6, 7, 8]
