"""`JsonMessages`: the stream's columns come from the pipeline, and poison costs only itself."""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pytest

from inferline.io.json_messages import JsonMessages


def _bodies(n: int, start: int = 0) -> list[bytes]:
    return [
        json.dumps({"id": i, "feature": [5.1, 3.5, 1.4, 0.2], "target": 0}).encode() for i in range(start, n)
    ]


def test_integer_features_first_are_floats_and_later_floats_fit() -> None:
    messages = JsonMessages(key="id", inputs=["feature"])
    first = messages.decode([b'{"id": 1, "feature": [5, 3, 1, 0]}'])
    assert first.table.schema.field("feature").type == pa.list_(pa.float64())
    later = messages.decode(_bodies(3))
    assert later.errors == {} and later.table.column("feature").to_pylist()[0] == [5.1, 3.5, 1.4, 0.2]


def test_a_wrong_typed_first_message_does_not_decide_the_schema() -> None:
    messages = JsonMessages(key="id", inputs=["feature"])
    first = messages.decode([b'{"id": 0, "feature": "5.1,3.5,1.4,0.2"}'])
    assert first.good == [] and first.errors == {
        0: "field 'feature' is text, expected numbers (a model input)"
    }
    assert messages.decode(_bodies(4)).good == [0, 1, 2, 3]


def test_null_and_keyless_messages_are_reported_alone() -> None:
    messages = JsonMessages(key="id", inputs=["feature"])
    decoded = messages.decode(
        [
            b'{"id": 0, "feature": null}',
            b'{"feature": [1.0]}',
            b'{"id": null, "feature": [1.0]}',
            *_bodies(5, 3),
        ]
    )
    assert decoded.good == [3, 4]
    assert decoded.errors == {
        0: "field 'feature' is empty, expected numbers (a model input)",
        1: "no 'id' (the pipeline's key:), or it is null",
        2: "no 'id' (the pipeline's key:), or it is null",
    }


def test_poison_in_a_known_stream_is_found_without_screening_the_good_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages = JsonMessages(key="id", inputs=["feature"])
    messages.decode(_bodies(10))
    screened: list[int] = []
    screen = messages._screen

    def counting(bodies: list[bytes], rows: list[int], errors: dict[int, str]) -> Any:
        screened.extend(rows)
        return screen(bodies, rows, errors)

    monkeypatch.setattr(messages, "_screen", counting)
    bodies = _bodies(1000)
    bodies[10], bodies[500], bodies[998] = (
        b"not json",
        b'{"id": 500, "feature": "x"}',
        b'{"id": 9, "target": "a"}',
    )
    decoded = messages.decode(bodies)
    assert screened == [10, 500, 998]  # one look at each poison message, none at the others
    assert sorted(decoded.errors) == [10, 500, 998]
    assert decoded.errors[998] == "field 'target' is text, where the stream has number"
    assert decoded.good == [i for i in range(1000) if i not in (10, 500, 998)]
    assert decoded.table.column("id").to_pylist() == decoded.good
