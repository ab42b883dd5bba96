"""`inferline serve`'s TorchServe gRPC flags: addresses, safe defaults, one-line errors."""

from __future__ import annotations

import socket

import pytest

from inferline.commands.serve import torchserve_grpc
from inferline.errors import InferlineError
from tests.conftest import free_port, port_pair


def test_management_listens_on_loopback_and_the_next_port_by_default() -> None:
    assert torchserve_grpc("0.0.0.0", 0, None, "127.0.0.1", "t") == (None, None)
    port = port_pair()
    inference, management = torchserve_grpc("0.0.0.0", port, None, "127.0.0.1", "t")
    assert (inference, management) == (f"0.0.0.0:{port}", f"127.0.0.1:{port + 1}")
    exposed = torchserve_grpc("127.0.0.1", port, None, "0.0.0.0", "t")  # with a token it may be exposed
    assert exposed == (f"127.0.0.1:{port}", f"0.0.0.0:{port + 1}")
    other = free_port()
    assert torchserve_grpc("::1", port, other, "127.0.0.1", None) == (f"[::1]:{port}", f"127.0.0.1:{other}")
    assert torchserve_grpc("127.0.0.1", port, 0, "127.0.0.1", None) == (f"127.0.0.1:{port}", None)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            (70000, None, "127.0.0.1", None),
            "serve: --ts-grpc-port 70000; expected 1-65535, or 0 to turn it off",
        ),
        ((None, -1, "127.0.0.1", None), "serve: --ts-grpc-management-port -1; expected 1-65535"),
        ((7070, 7070, "127.0.0.1", None), "--ts-grpc-port and --ts-grpc-management-port are both 7070"),
        ((7070, None, "0.0.0.0", None), "--ts-grpc-management-host 0.0.0.0 exposes model management"),
    ],
)
def test_bad_flags_are_one_line_errors(
    args: tuple[int | None, int | None, str, str | None], message: str
) -> None:
    with pytest.raises(InferlineError, match=message.replace("(", r"\(").replace(")", r"\)")):
        torchserve_grpc("127.0.0.1", *args)


def test_ports_of_other_apis_are_refused() -> None:
    taken = {8080: "--port", 8081: "--grpc-port"}
    with pytest.raises(
        InferlineError, match="serve: port 8081 is both --grpc-port and --ts-grpc-management-port"
    ):
        torchserve_grpc("127.0.0.1", 8079, 8081, "127.0.0.1", None, taken=taken)
    with pytest.raises(InferlineError, match="port 8081 is both --grpc-port and --ts-grpc-management-port"):
        torchserve_grpc("127.0.0.1", 8080, None, "127.0.0.1", None, taken={8081: "--grpc-port"})
    with pytest.raises(InferlineError, match="port 8080 is both --port and --ts-grpc-port"):
        torchserve_grpc("127.0.0.1", 8080, None, "127.0.0.1", None, taken=taken)


def test_a_busy_port_is_named() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(InferlineError, match=f"--ts-grpc-management-port {port} on 127.0.0.1 is already"):
            torchserve_grpc("127.0.0.1", None, port, "127.0.0.1", None)
