"""TorchServe's gRPC inference API (`inference.proto`): a thin front door to `ServerState.handle`.

`PredictionsRequest.input` is one TorchServe request: a `.mar` handler gets the whole map as
its request item (`{"data": b"..."}`), as TorchServe's backend hands gRPC inputs over; other
models read `input["data"]` (or `"body"`) as a `/predictions` body without a Content-Type
(JSON instances, or an image when the model has image settings). `prediction` is the answer
as TorchServe sends it: a handler's bytes as they are, text as UTF-8, anything else as JSON
(other models: the JSON `/predictions` answers). Batching, versions and metrics are REST's.

Example (TorchServe's `torchserve_grpc_client.py`):
    >>> stub.Predictions(PredictionsRequest(model_name="mnist", input={"data": png}))  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
from google.protobuf import empty_pb2
from starlette.responses import Response

from inferline.models.base import Prediction
from inferline.models.mar import FRAMEWORK as MAR
from inferline.models.ts_context import SEQUENCE_END, SEQUENCE_ID, SEQUENCE_START, TorchServeRequest
from inferline.models.ts_stream import Listener
from inferline.serve.answers import encode_answer
from inferline.serve.http import ApiError, bad_request, invalid_input
from inferline.serve.models import ServedVersion
from inferline.serve.rpc.proto import torchserve_inference_pb2 as pb
from inferline.serve.rpc.server import rpc_bidi, rpc_method, rpc_stream
from inferline.serve.rpc.ts_status import TS_PREFIX, ts_status
from inferline.serve.state import THREAD_ANSWER_ROWS, ServerState
from inferline.serve.torchserve import parse_body, render_predictions
from inferline.serve.ts_bodies import INSTANCE_FIELDS

SERVICE = f"{TS_PREFIX}.inference.InferenceAPIsService"  # the public name (see the .proto)


class InferenceServicer:
    """The RPCs of TorchServe's `InferenceAPIsService`, each named as in the .proto."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def Ping(self, request: Any, context: Any) -> Any:  # noqa: N802 (the .proto's names)
        health = "Healthy" if self.state.ready else "Unhealthy"
        return pb.TorchServeHealthResponse(health=json.dumps({"status": health}, indent=2))

    async def Predictions(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.PredictionResponse(prediction=await self.predict(request, "Predictions"))

    async def StreamPredictions(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        # A handler's intermediate responses (`send_intermediate_predict_response`) are sent
        # as they come, then its final answer, as TorchServe streams them.
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[bytes] = asyncio.Queue()

        def listener(piece: bytes) -> None:  # called on the thread running the handler
            loop.call_soon_threadsafe(pieces.put_nowait, piece)

        answer = asyncio.ensure_future(self.predict(request, "StreamPredictions", listener))
        try:
            while not answer.done():
                piece = asyncio.ensure_future(pieces.get())
                await asyncio.wait({answer, piece}, return_when=asyncio.FIRST_COMPLETED)
                if piece.done():
                    yield pb.PredictionResponse(prediction=piece.result())
                else:
                    piece.cancel()
            while not pieces.empty():
                yield pb.PredictionResponse(prediction=pieces.get_nowait())
            yield pb.PredictionResponse(prediction=answer.result())
        finally:
            answer.cancel()

    async def StreamPredictions2(self, requests: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        # As TorchServe: each request is answered in order, its handler told its sequence in
        # request headers (`context.get_sequence_id(idx)`); a request without a sequence_id
        # starts a new one, whose id the answer carries. A failed request answers its status in
        # the stream, which stays open for the next.
        async for request in requests:
            sequence = request.sequence_id if request.HasField("sequence_id") else ""
            headers = {SEQUENCE_ID: sequence}
            if not sequence:
                sequence = headers[SEQUENCE_ID] = f"ts-seq-{uuid.uuid4()}"
                headers[SEQUENCE_START] = "true"
            if request.input.get(SEQUENCE_END, b"").lower() == b"true":
                headers[SEQUENCE_END] = "true"
            try:
                prediction = await self.predict(request, "StreamPredictions2", headers=headers)
            except ApiError as exc:
                code = ts_status(exc.code).value[0]
                failed = pb.Status(code=code, message=exc.message)
                yield pb.PredictionResponse(sequence_id=sequence, status=failed)
                continue
            yield pb.PredictionResponse(prediction=prediction, sequence_id=sequence)

    async def predict(
        self, request: Any, rpc: str, listener: Listener | None = None, headers: dict[str, str] | None = None
    ) -> bytes:
        name = request.model_name
        if not name:
            raise bad_request(f"{rpc}: model_name is required")
        where = f"{rpc} {name}"
        inputs = dict(request.input)

        async def decode(served: ServedVersion) -> tuple[np.ndarray, Any]:
            if served.framework == MAR:
                rows = np.empty(1, dtype=object)
                # TorchServe's request item: every input by its name
                rows[0] = TorchServeRequest(inputs, headers or {}, listener)
                return rows, None
            return await self.state.offload.thread(_parse, inputs, served, where, self.state)

        async def encode(served: ServedVersion, prediction: Prediction, context: Any) -> bytes:
            if len(prediction.prediction) >= THREAD_ANSWER_ROWS:
                return await self.state.offload.thread(answer_bytes, served, prediction, context)
            return answer_bytes(served, prediction, context)

        answer: bytes = await self.state.handle(name, request.model_version or None, decode, encode)
        return answer


def _parse(inputs: dict[str, bytes], served: ServedVersion, where: str, state: ServerState) -> Any:
    body = next((inputs[key] for key in INSTANCE_FIELDS if key in inputs), None)
    if body is None:
        have = ", ".join(sorted(inputs)) or "none"
        raise bad_request(f"{where}: no 'data' in input (have {have}); send input={{'data': bytes}}")
    try:
        return parse_body(body, "", served, route=where, offload=state.offload)
    except (ValueError, TypeError, OverflowError, RecursionError, LookupError) as exc:
        if isinstance(exc, ApiError):
            raise
        first_line = (str(exc).strip().splitlines() or [""])[0]
        reason = f"{type(exc).__name__}: {first_line}"
        raise invalid_input(f"model {served.model_id}: cannot read input 'data' ({reason})") from exc


def answer_bytes(served: ServedVersion, prediction: Prediction, context: Any) -> bytes:
    """The `/predictions` answer as bytes (a handler's bytes or text as they are)."""
    answer = render_predictions(served, prediction, context)
    if isinstance(answer, Response):
        return bytes(answer.body)
    data, _ = encode_answer(answer)
    return data


def handler(state: ServerState) -> Any:
    """The generic handler serving TorchServe's `InferenceAPIsService` from `state`."""
    servicer = InferenceServicer(state)
    service = pb.DESCRIPTOR.services_by_name["InferenceAPIsService"]
    wrappers = {"StreamPredictions": rpc_stream, "StreamPredictions2": rpc_bidi}
    table = {}
    for method in service.methods:
        wrap = wrappers.get(method.name, rpc_method)
        request_type = empty_pb2.Empty if method.name == "Ping" else pb.PredictionsRequest
        table[method.name] = wrap(getattr(servicer, method.name), request_type, ts_status)
    return grpc.method_handlers_generic_handler(SERVICE, table)
