"""v2 tensor encodings: raw numeric views, BYTES length prefixes, JSON data, and their errors."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from inferline.serve.http import ApiError
from inferline.serve.tensors import check_header, datatype_of, decode_json, decode_raw, encode_raw, json_data


@pytest.mark.parametrize("datatype", ["BOOL", "UINT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"])
def test_raw_numeric_tensors_round_trip_as_views_of_the_buffer(datatype: str) -> None:
    array = (np.arange(6).reshape(2, 3) % (2 if datatype == "BOOL" else 6)).astype(
        {
            "BOOL": np.bool_,
            "UINT8": np.uint8,
            "INT16": np.int16,
            "INT32": np.int32,
            "INT64": np.int64,
            "FP16": np.float16,
            "FP32": np.float32,
            "FP64": np.float64,
        }[datatype]
    )
    buffer = encode_raw(array)
    decoded = decode_raw(buffer, datatype, [2, 3], name="t")
    assert decoded.tolist() == array.tolist() and datatype_of(decoded) == datatype
    assert not decoded.flags.owndata  # a view of `buffer`, not a copy


def test_bytes_tensors_have_four_byte_little_endian_length_prefixes() -> None:
    values = np.array([b"a", b"", "h\u00e9".encode()], dtype=object)
    buffer = encode_raw(values)
    assert buffer == b"\x01\x00\x00\x00a" + b"\x00\x00\x00\x00" + struct.pack("<I", 3) + "h\u00e9".encode()
    assert decode_raw(buffer, "BYTES", [3, 1], name="t").reshape(-1).tolist() == values.tolist()
    assert encode_raw(np.array(["setosa"])) == b"\x06\x00\x00\x00setosa"  # numpy text is BYTES too
    assert json_data(np.array([b"x", b"y"], dtype=object)) == ["x", "y"]


@pytest.mark.parametrize(
    ("buffer", "datatype", "shape", "message"),
    [
        (b"\x00" * 7, "FP32", [2], r"input 't': 7 bytes of FP32 data, but shape \[2\] needs 8"),
        (b"\x05\x00\x00\x00ab", "BYTES", [1], r"BYTES element 0 claims 5 bytes past the end"),
        (b"\x01\x00\x00\x00a", "BYTES", [2], r"BYTES data ends before element 1 of 2"),
        (b"\x01\x00\x00\x00ab", "BYTES", [1], r"1 bytes left after 1 BYTES elements"),
    ],
)
def test_bad_raw_data_is_a_400_naming_the_input(
    buffer: bytes, datatype: str, shape: list[int], message: str
) -> None:
    with pytest.raises(ApiError, match=message) as error:
        decode_raw(buffer, datatype, shape, name="t")
    assert error.value.code == 400


def test_json_data_and_headers() -> None:
    assert decode_json("t", "INT64", [2, 2], [[1, 2], [3, 4]], model="m/1").tolist() == [[1, 2], [3, 4]]
    assert decode_json("t", "BYTES", [2], ["a", "b"], model="m/1").tolist() == [b"a", b"b"]
    with pytest.raises(ApiError, match=r"model m/1: input 't' is BYTES but element 1 is not a string"):
        decode_json("t", "BYTES", [2], ["a", 1], model="m/1")
    with pytest.raises(ApiError, match=r"model m/1: input 't' has 3 values but shape \[2\] needs 2"):
        decode_json("t", "FP32", [2], [1, 2, 3], model="m/1")
    with pytest.raises(ApiError, match=r"model m/1: input 't' value \[1\] is 2.5; expected a whole number"):
        decode_json("t", "INT64", [2], [1, 2.5], model="m/1")
    with pytest.raises(ApiError, match=r"w: input 't' has datatype 'FP8'; expected one of BOOL"):
        check_header("t", "FP8", [1], where="w")
    with pytest.raises(ApiError, match=r"w: input 't' shape must be a list of sizes, got \[-1\]"):
        check_header("t", "FP32", [-1], where="w")
