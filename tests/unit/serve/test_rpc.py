"""The vendored gRPC .proto: its generated code is current and keeps Triton's wire format."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import inferline

SRC = Path(inferline.__file__).resolve().parents[1]
PROTO = "inferline/serve/rpc/proto/grpc_service.proto"


def test_generated_code_is_current(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    (tmp_path / PROTO).parent.mkdir(parents=True)
    shutil.copy(SRC / PROTO, tmp_path / PROTO)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--pyi_out=.", PROTO],
        cwd=tmp_path,
        check=True,
    )
    # The descriptor protoc embeds is what matters (the code around it varies with protoc's version).
    name = PROTO.replace(".proto", "_pb2.py")
    assert descriptor(tmp_path / name) == descriptor(SRC / name), "run scripts/gen_grpc.sh"
    pyi = (SRC / PROTO.replace(".proto", "_pb2.pyi")).read_text()
    assert all(f"class {m}(" in pyi for m in ("ModelInferRequest", "ModelConfig", "RepositoryIndexResponse"))


def descriptor(path: Path) -> bytes:
    match = re.search(r"AddSerializedFile\((b'.*?')\)\n", path.read_text())
    assert match, path
    value = ast.literal_eval(match.group(1))
    assert isinstance(value, bytes)
    return value


def test_messages_are_wire_compatible_with_tritonclients() -> None:
    """The same bytes parse the same in both: field numbers and types were kept."""
    service_pb2 = pytest.importorskip("tritonclient.grpc.service_pb2")
    from inferline.serve.rpc.proto import grpc_service_pb2 as ours

    theirs = service_pb2.ModelInferRequest(model_name="iris", model_version="2", id="r")
    tensor = theirs.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    tensor.parameters["k"].int64_param = 7
    theirs.outputs.add(name="scores")
    theirs.raw_input_contents.append(b"\x00" * 16)
    theirs.parameters["p"].string_param = "v"
    parsed = ours.ModelInferRequest.FromString(theirs.SerializeToString())
    assert parsed.model_name == "iris" and parsed.model_version == "2" and parsed.id == "r"
    assert parsed.inputs[0].name == "input" and list(parsed.inputs[0].shape) == [1, 4]
    assert parsed.inputs[0].parameters["k"].int64_param == 7 and parsed.parameters["p"].string_param == "v"
    assert parsed.outputs[0].name == "scores" and parsed.raw_input_contents[0] == b"\x00" * 16

    config = ours.ModelConfigResponse()
    config.config.name = "iris"
    config.config.max_batch_size = 32
    config.config.input.add(name="input", data_type=ours.TYPE_FP32, dims=[4])
    config.config.dynamic_batching.max_queue_delay_microseconds = 5000
    back = service_pb2.ModelConfigResponse.FromString(config.SerializeToString())
    assert back.config.name == "iris" and back.config.max_batch_size == 32
    assert back.config.input[0].data_type == 11 and list(back.config.input[0].dims) == [4]  # TYPE_FP32
    assert back.config.dynamic_batching.max_queue_delay_microseconds == 5000
    service = ours.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inferline.v2.GRPCInferenceService"  # served as inference.*
