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


_NOT_JSON = "not a usable JSON message: Expecting value: line 1 column 1 (char 0)"
_TEXT = "field 'feature' is text, expected numbers (a model input)"
_NULL = "field 'feature' is empty, expected numbers (a model input)"


def _poisoned(n: int, every: int) -> tuple[list[bytes], dict[int, str]]:
    bodies = _bodies(n)
    kinds = [
        (b"not json", _NOT_JSON),
        (b'{"id": -1, "feature": "5.1,3.5,1.4,0.2"}', _TEXT),
        (b'{"id": -2, "feature": null}', _NULL),
    ]
    expected: dict[int, str] = {}
    for k, i in enumerate(range(every // 2, n, every)):
        bodies[i], expected[i] = kinds[k % len(kinds)]
    return bodies, expected


@pytest.mark.parametrize("every", [100, 3], ids=["sparse", "dense"])
def test_each_kind_of_poison_is_dead_lettered_alone_with_its_reason(every: int) -> None:
    # Sparse poison is found by pyarrow naming each row; dense poison by the per-message screen.
    messages = JsonMessages(key="id", inputs=["feature"])
    messages.decode(_bodies(10))
    bodies, expected = _poisoned(1000, every)
    decoded = messages.decode(bodies)
    assert decoded.errors == expected
    assert decoded.good == [i for i in range(1000) if i not in expected]
    assert decoded.table.column("id").to_pylist() == decoded.good
    assert decoded.table.schema.field("feature").type == pa.list_(pa.float64())


def test_a_message_that_needs_a_wider_schema_after_poison_widens_it() -> None:
    messages = JsonMessages(key="id", inputs=["feature"])
    messages.decode(_bodies(10))  # target: int64
    bodies = _bodies(300)
    bodies[50] = b"not json"
    bodies[200] = b'{"id": 200, "feature": [1.0], "target": 1.5}'
    decoded = messages.decode(bodies)
    assert decoded.errors == {50: _NOT_JSON}
    assert decoded.good == [i for i in range(300) if i != 50]
    assert decoded.table.column("target").to_pylist()[199] == 1.5
    assert messages.schema["target"] == pa.float64()


def test_a_new_field_of_two_types_on_both_sides_of_poison_keeps_the_usual_type() -> None:
    messages = JsonMessages(key="id", inputs=["feature"])
    messages.decode(_bodies(10))
    bodies = [
        *(json.dumps({"id": i, "feature": [1.0], "note": i}).encode() for i in range(3)),
        b"not json",
        *(json.dumps({"id": i, "feature": [1.0], "note": "a"}).encode() for i in range(4, 24)),
    ]
    decoded = messages.decode(bodies)
    assert decoded.errors == {
        0: "field 'note' is number, where the stream has text",
        1: "field 'note' is number, where the stream has text",
        2: "field 'note' is number, where the stream has text",
        3: _NOT_JSON,
    }
    assert decoded.good == list(range(4, 24))


def test_in_a_new_stream_poison_in_a_model_input_is_found_without_screening_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages = JsonMessages(key="id", inputs=["feature"])
    screened: list[int] = []
    screen = messages._screen

    def counting(bodies: list[bytes], rows: list[int], errors: dict[int, str]) -> Any:
        screened.extend(rows)
        return screen(bodies, rows, errors)

    monkeypatch.setattr(messages, "_screen", counting)
    bodies, expected = _poisoned(500, 100)
    decoded = messages.decode(bodies)
    assert decoded.errors == expected
    assert screened == [50, 150, 350, 450]  # the null feature (250) parses; _fit finds it
    assert messages.schema["feature"] == pa.list_(pa.float64())


def test_in_a_new_stream_a_wrong_typed_first_message_is_judged_by_the_others() -> None:
    messages = JsonMessages(key="id", inputs=["feature"])
    decoded = messages.decode([b'{"id": 0, "feature": "5.1,3.5,1.4,0.2"}', *_bodies(6, 1)])
    assert decoded.errors == {0: _TEXT}
    assert decoded.good == [1, 2, 3, 4, 5]


def test_poison_the_vectorised_look_misses_is_found_by_pyarrow() -> None:
    messages = JsonMessages(key="id", inputs=["feature"])
    messages.decode(_bodies(10))
    bodies = _bodies(300)
    bodies[20] = b'{"id": 20, "feature": [1.0,'  # an object cut short
    bodies[120] = b'{"id": 120, "feature": ["a"]}'  # a list, but not of numbers
    bodies[220] = b' {"id": 220, "feature": [1.0]}'  # looks odd, fits
    try:
        json.loads(bodies[20])
    except ValueError as exc:
        cut_short = f"not a usable JSON message: {exc}"
    decoded = messages.decode(bodies)
    assert decoded.errors == {
        20: cut_short,
        120: "field 'feature' is a list but not of numbers, expected numbers (a model input)",
    }
    assert decoded.good == [i for i in range(300) if i not in (20, 120)]
