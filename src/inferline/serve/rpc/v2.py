"""KServe v2 `inference.GRPCInferenceService` over gRPC: a thin front door to `serve.inference`.

Tensors arrive in `raw_input_contents` (what tritonclient and kserve send) or in typed
`contents`, and answers always go back in `raw_output_contents`. Inference runs through
`ServerState.handle`, so batching, versions, hot swap and metrics are those of REST.
"""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

import inferline
from inferline.models.base import Prediction
from inferline.serve import inference
from inferline.serve.http import ApiError, bad_request
from inferline.serve.inference import InferRequest
from inferline.serve.models import ServedVersion
from inferline.serve.rpc.proto import grpc_service_pb2 as pb
from inferline.serve.rpc.server import check_token, rpc_method
from inferline.serve.state import ServerState
from inferline.serve.tensors import Tensor, check_header, decode_json, decode_raw, encode_raw

SERVICE = "inference.GRPCInferenceService"  # the public name; the .proto's package is private
EXTENSIONS = ["binary_tensor_data", "model_repository"]

CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


class V2Servicer:
    """The RPCs of `GRPCInferenceService`, each named as in the .proto."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 (the .proto's names)
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerReadyResponse(ready=self.state.ready)

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            await self.state.resolve(request.name, request.version or None)
        except ApiError:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        return pb.ServerMetadataResponse(
            name="inferline", version=inferline.__version__, extensions=EXTENSIONS
        )

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        served = await self.state.resolve(request.name, request.version or None)
        meta = await inference.model_metadata(self.state.models.models[served.name], served)
        return json_format.ParseDict(meta, pb.ModelMetadataResponse(), ignore_unknown_fields=True)

    async def ModelConfig(self, request: Any, context: Any) -> Any:  # noqa: N802
        served = await self.state.resolve(request.name, request.version or None)
        config = await inference.model_config(served)
        return json_format.ParseDict({"config": config}, pb.ModelConfigResponse())

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        where = f"ModelInfer {request.model_name}"

        async def decode(served: ServedVersion) -> tuple[np.ndarray, InferRequest]:
            infer_request = decode_request(request, where)
            inference.check_outputs(served, infer_request.outputs, where=where)
            return inference.prepare(served, infer_request, where=where), infer_request

        return await self.state.handle(request.model_name, request.model_version or None, decode, encode)

    async def RepositoryIndex(self, request: Any, context: Any) -> Any:  # noqa: N802
        check_token(self.state, context, "RepositoryIndex")
        models = await inference.repository_models(self.state)
        if request.ready:
            models = [m for m in models if m["state"] == "READY"]
        return json_format.ParseDict({"models": models}, pb.RepositoryIndexResponse())

    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:  # noqa: N802
        check_token(self.state, context, "RepositoryModelLoad")
        await self._catalog().load_model(request.model_name)
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:  # noqa: N802
        check_token(self.state, context, "RepositoryModelUnload")
        await self._catalog().unregister(request.model_name, None)
        return pb.RepositoryModelUnloadResponse()

    def _catalog(self) -> Any:
        if self.state.catalog is None:
            raise bad_request("this server has no model store; start it with --models STORE")
        return self.state.catalog


def decode_request(request: Any, where: str) -> InferRequest:
    """A `ModelInferRequest` as tensors (raw bytes become numpy views, not copies)."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise bad_request(f"{where}: {len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    tensors = []
    for i, spec in enumerate(request.inputs):
        datatype, shape = check_header(spec.name, spec.datatype, list(spec.shape), where=where)
        if raw:
            array = decode_raw(raw[i], datatype, shape, name=spec.name)
        elif datatype == "BYTES":
            array = np.array(list(spec.contents.bytes_contents), dtype=object)
            if array.size != int(np.prod(shape)):
                raise bad_request(f"{where}: input {spec.name!r} has {array.size} values for shape {shape}")
            array = array.reshape(shape)
        elif datatype in CONTENTS:
            values = list(getattr(spec.contents, CONTENTS[datatype]))
            array = decode_json(spec.name, datatype, shape, values, model=request.model_name)
        else:
            raise bad_request(f"{where}: input {spec.name!r} is {datatype}: send it in raw_input_contents")
        tensors.append(Tensor(spec.name, datatype, array))
    wanted = [output.name for output in request.outputs] or None
    parameters = {key: _value(value) for key, value in request.parameters.items()}
    return InferRequest(tensors, wanted, request.id or None, parameters)


def encode(served: ServedVersion, prediction: Prediction, request: InferRequest) -> Any:
    response = pb.ModelInferResponse(
        model_name=served.name, model_version=served.version, id=request.id or ""
    )
    for tensor in inference.outputs_for(served, prediction, request):
        response.outputs.add(name=tensor.name, datatype=tensor.datatype, shape=tensor.shape)
        response.raw_output_contents.append(encode_raw(tensor.array))
    return response


def _value(parameter: Any) -> Any:
    choice = parameter.WhichOneof("parameter_choice")
    return getattr(parameter, choice) if choice else None


def handler(state: ServerState) -> Any:
    """The generic handler serving `inference.GRPCInferenceService` from `state`."""
    servicer = V2Servicer(state)
    methods = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods
    table = {
        method.name: rpc_method(getattr(servicer, method.name), getattr(pb, method.input_type.name))
        for method in methods
    }
    return grpc.method_handlers_generic_handler(SERVICE, table)
