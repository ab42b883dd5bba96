"""TorchServe's gRPC names and status codes, shared by its inference and management services.

`CODES` is TorchServe's own HTTP -> gRPC mapping (`GRPCUtils.getGRPCStatusCode`), so a
failure carries the status a TorchServe client checks for; inferline's 422 (input of the
wrong shape) and 415 (a body the model cannot take) are INVALID_ARGUMENT.
"""

from __future__ import annotations

import grpc

TS_PREFIX = "org.pytorch.serve.grpc"  # the .protos' public package (ours is renamed)

CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    405: grpc.StatusCode.UNIMPLEMENTED,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    416: grpc.StatusCode.OUT_OF_RANGE,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    501: grpc.StatusCode.UNIMPLEMENTED,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def ts_status(code: int) -> grpc.StatusCode:
    """TorchServe's gRPC status for HTTP status `code` (other 4xx: FAILED_PRECONDITION)."""
    if code in CODES:
        return CODES[code]
    return grpc.StatusCode.FAILED_PRECONDITION if 400 <= code < 500 else grpc.StatusCode.INTERNAL
