"""serve/protocol.py's answer pieces: header lines, uvicorn's default lines, raw TorchServe bodies."""

from __future__ import annotations

import pytest

from inferline.serve.protocol import default_lines, header_lines, is_raw


def test_header_lines_refuse_a_value_that_would_split_the_answer() -> None:
    assert header_lines([(b"x-model-id", b"cnn/1")]) == b"x-model-id: cnn/1\r\n"
    with pytest.raises(RuntimeError, match=r"invalid value of answer header x-model-id: b'cnn\\r\\nx: 1'"):
        header_lines([(b"x-model-id", b"cnn\r\nx: 1")])


def test_default_lines_follow_uvicorns_list() -> None:
    first = [(b"date", b"Wed, 02 Dec 2026 01:00:00 GMT"), (b"server", b"uvicorn")]
    assert default_lines(first) == b"date: Wed, 02 Dec 2026 01:00:00 GMT\r\nserver: uvicorn\r\n"
    second = [(b"date", b"Wed, 02 Dec 2026 01:00:01 GMT"), (b"server", b"uvicorn")]
    assert default_lines(second).startswith(b"date: Wed, 02 Dec 2026 01:00:01 GMT\r\n")


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        ("", True),
        ("application/octet-stream", True),
        ("image/png", True),
        ("application/json", False),
        ("application/vnd.api+json; charset=utf-8", False),
        ("multipart/form-data; boundary=x", False),
    ],
)
def test_raw_bodies_are_what_a_handler_gets_as_bytes(content_type: str, raw: bool) -> None:
    assert is_raw(content_type) is raw


@pytest.mark.parametrize(
    ("version", "own"),
    [("0.54.0", True), ("0.53.1", True), ("0.45.0", False), ("0.55.0", False), ("1.0.0", False)],
)
def test_the_own_protocol_serves_only_on_uvicorn_releases_it_was_made_for(version: str, own: bool) -> None:
    from inferline.serve.app import http_protocol
    from inferline.serve.protocol import InferenceProtocol

    assert (http_protocol(version) is InferenceProtocol) is own
    assert own or http_protocol(version) == "auto"


def test_the_installed_uvicorn_gets_the_own_protocol() -> None:
    # pyproject.toml caps uvicorn below PROTOCOL_RELEASES' end, so an install gets the fast path.
    from inferline.serve.app import http_protocol
    from inferline.serve.protocol import InferenceProtocol

    assert http_protocol() is InferenceProtocol
