"""Value checks shared by the protocols: JSON depth, numbers, datatypes, answers with NaN."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from inferline.serve.answers import encode_answer, warning_header
from inferline.serve.bodies import RowSpec, parse_instances
from inferline.serve.http import ApiError, json_depth, parse_json
from inferline.serve.values import finite_numbers, typed_tensor


def where(index: tuple[int, ...]) -> str:
    return f"at {list(index)}"


@pytest.mark.parametrize(
    ("body", "depth"),
    [
        (b"[1, 2]", 0),  # too few brackets to be worth measuring
        (b"[" * 100 + b"]" * 100, 100),
        (json.dumps({"a": "[[[[" * 40, "b": [[[1]]]}).encode(), 4),
        (json.dumps(['\\"[[[[' * 50, [[[1]]]] * 30).encode(), 4),
    ],
)
def test_json_depth_ignores_brackets_in_strings(body: bytes, depth: int) -> None:
    assert json_depth(body) == depth


def test_parse_json_refuses_deep_nesting_before_parsing() -> None:
    with pytest.raises(ApiError, match=r"^POST /x: JSON nested 100000 levels deep; at most 64 allowed$"):
        parse_json(b"[" * 100_000 + b"]" * 100_000, route="POST /x")


def test_finite_numbers_names_the_first_bad_value() -> None:
    assert finite_numbers([[1, 2.5]], where=where).tolist() == [[1.0, 2.5]]
    for data, shown in (
        ([[1, float("nan")]], "NaN"),
        ([[1, None]], "null"),
        ([[float("-inf"), 1]], "-Infinity"),
        ([[1, "2"]], "the string '2'"),
        ([[1, 10**400]], "an integer of 401 digits"),
        ([[1, {"a": 1}]], "an object"),
    ):
        with pytest.raises(ApiError, match=rf"^at \[0, \d\] is {shown}"):
            finite_numbers(data, where=where)
    missing = finite_numbers([[1, None], [float("nan"), 2]], where=where, allow_missing=True)
    assert np.isnan(missing).tolist() == [[False, True], [True, False]]


def test_typed_tensor_checks_the_declared_datatype() -> None:
    assert typed_tensor([1, 2], "INT8", where=where, may_hold_bools=False).dtype == np.int8
    assert typed_tensor([[True, False]], "BOOL", where=where, may_hold_bools=True).dtype == np.bool_
    assert typed_tensor([], "BOOL", where=where, may_hold_bools=False).shape == (0,)
    with pytest.raises(ApiError, match=r"at \[1\] is 2.5; expected a whole number \(UINT16\)"):
        typed_tensor([1, 2.5], "UINT16", where=where, may_hold_bools=False)
    with pytest.raises(ApiError, match=r"at \[0\] is 70000, outside INT16's range -32768..32767"):
        typed_tensor([70000], "INT16", where=where, may_hold_bools=False)
    with pytest.raises(ApiError, match=r"at \[0\] is 1e\+300, too large for FP32"):
        typed_tensor([1e300], "FP32", where=where, may_hold_bools=False)


def test_instances_parse_in_a_worker_and_errors_survive_pickling() -> None:
    spec = RowSpec("iris/1", ("a", "b"), (2,))
    rows = parse_instances(b"[[1, 2], [3, 4]]", "POST /p", spec)
    assert rows.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    with pytest.raises(ApiError) as caught:
        parse_instances(b'[{"a": 1, "b": true}]', "POST /p", spec)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (copy.code, copy.type, copy.message) == (422, "InvalidInput", caught.value.message)
    assert copy.message == "model iris/1: instance 0, field b is true (a boolean); expected a finite number"


def test_answers_write_non_finite_outputs_as_null() -> None:
    body, replaced = encode_answer(
        {"predictions": np.array([1.5, np.nan, np.inf]), "labels": ["a", "b"], "extra": [[1.0, float("nan")]]}
    )
    assert json.loads(body) == {
        "predictions": [1.5, None, None],
        "labels": ["a", "b"],
        "extra": [[1.0, None]],
    }
    assert replaced == 3
    assert warning_header("m/1", replaced) == {
        "X-Inferline-Warning": "model m/1 output 3 non-finite values (NaN/Infinity), sent as null"
    }
    big, _ = encode_answer({"scores": np.arange(20_000, dtype=np.float64).reshape(-1, 2)})
    assert json.loads(big)["scores"][-1] == [19998.0, 19999.0]


def test_a_flat_handler_answer_encodes_as_the_general_path_does() -> None:
    assert encode_answer({"class": 3, "probability": 0.25, "label": "cat", "ok": True, "why": None}) == (
        b'{"class":3,"probability":0.25,"label":"cat","ok":true,"why":null}',
        0,
    )
    assert encode_answer({"cat": float("nan"), "dog": 0.5}) == (b'{"cat":null,"dog":0.5}', 1)
    assert encode_answer({"p": np.float32(0.5), 1: "one"}) == (b'{"p":0.5,"1":"one"}', 0)


def test_worker_parsed_bodies_carry_arrays_and_keep_every_check() -> None:
    from inferline.serve.bodies import parse_json_arrays

    numbers = list(range(2000))
    payload = parse_json_arrays(json.dumps({"inputs": [{"data": numbers}], "id": "a"}).encode(), "POST /v")
    data = payload["inputs"][0]["data"]
    assert isinstance(data, np.ndarray) and data.tolist() == numbers and payload["id"] == "a"
    with_bools = parse_json_arrays(json.dumps({"data": [*numbers, True]}).encode(), "POST /v")
    assert isinstance(with_bools["data"], list)  # numpy would take true for 1
    with pytest.raises(ApiError, match=r"at \[128\] is 128, outside INT8's range -128..127"):
        typed_tensor(data, "INT8", where=where, may_hold_bools=False)
    floats = parse_json_arrays(json.dumps([0.5] * 1500 + [float("nan")]).encode(), "POST /v")
    with pytest.raises(ApiError, match=r"at \[1500\] is NaN; expected a finite number"):
        typed_tensor(floats, "FP32", where=where, may_hold_bools=False)
