"""The vendored gRPC .protos: generated code is current; Triton's and TorchServe's wire formats kept."""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

import inferline

SRC = Path(inferline.__file__).resolve().parents[1]
PROTO_DIR = "inferline/serve/rpc/proto"
PROTOS = {"grpc_service": "ModelInferRequest", "torchserve_inference": "PredictionsRequest",
          "torchserve_management": "RegisterModelRequest"}  # fmt: skip


@pytest.mark.parametrize("name", sorted(PROTOS))
def test_generated_code_is_current(name: str, tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    proto = f"{PROTO_DIR}/{name}.proto"
    (tmp_path / proto).parent.mkdir(parents=True)
    shutil.copy(SRC / proto, tmp_path / proto)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.", "--pyi_out=.", proto],
        cwd=tmp_path,
        check=True,
    )
    # The descriptor protoc embeds is what matters (the code around it varies with protoc's version).
    generated = proto.replace(".proto", "_pb2.py")
    assert descriptor(tmp_path / generated) == descriptor(SRC / generated), "run scripts/gen_grpc.sh"
    pyi = (SRC / proto.replace(".proto", "_pb2.pyi")).read_text()
    assert f"class {PROTOS[name]}(" in pyi


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


def test_torchserve_protos_keep_torchserve_wire_format(tmp_path: Path) -> None:
    """Every message, field (name, number, type) and RPC of TorchServe 0.12's own .protos."""
    pytest.importorskip("grpc_tools")
    spec = importlib.util.find_spec("ts")
    jar = Path(spec.origin).parent / "frontend" / "model-server.jar" if spec and spec.origin else None
    if jar is None or not jar.exists():
        pytest.skip("the torchserve package (its frontend jar holds the .protos) is not installed")
    upstream = tmp_path / "upstream"
    with zipfile.ZipFile(jar) as archive:
        for name in ("inference.proto", "management.proto", "google/rpc/status.proto"):
            (upstream / name).parent.mkdir(parents=True, exist_ok=True)
            (upstream / name).write_bytes(archive.read(name))
    for ours, theirs in (("torchserve_inference", "inference"), ("torchserve_management", "management")):
        mine = file_set(SRC, f"{PROTO_DIR}/{ours}.proto", tmp_path / f"{ours}.pb")
        original = file_set(upstream, f"{theirs}.proto", tmp_path / f"{theirs}.pb")
        assert shape(mine, ours) == shape(original, theirs)
        if ours == "torchserve_inference":  # google.rpc.Status, copied in with its field numbers
            status = file_set(upstream, "google/rpc/status.proto", tmp_path / "status.pb")
            copied = next(m for m in mine.message_type if m.name == "Status")
            assert [(f.name, f.number, f.type, f.label) for f in copied.field] == [
                (f.name, f.number, f.type, f.label) for f in status.message_type[0].field
            ]


def file_set(root: Path, proto: str, out: Path) -> Any:
    from google.protobuf import descriptor_pb2

    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{root}", f"--descriptor_set_out={out}", proto],
        check=True,
    )
    return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]


def shape(file: Any, stem: str) -> dict[str, Any]:
    """What goes on the wire: messages by name -> fields, services -> RPCs (names, streaming)."""
    package = file.package

    def type_name(field: Any) -> str:  # the package is renamed; google.rpc.Status is inlined
        name = field.type_name.removeprefix(f".{package}.").replace(".google.rpc.Status", "Status")
        return f"{field.type}:{field.label}:{name}"

    def fields(message: Any) -> dict[str, Any]:
        out: dict[str, Any] = {f.name: (f.number, type_name(f)) for f in message.field}
        out.update({f"<{nested.name}>": fields(nested) for nested in message.nested_type})
        return out

    messages = {message.name: fields(message) for message in file.message_type if message.name != "Status"}
    services = {
        service.name: {
            m.name: (
                m.input_type.removeprefix(f".{package}."),
                m.output_type.removeprefix(f".{package}."),
                m.client_streaming,
                m.server_streaming,
            )
            for m in service.method
        }
        for service in file.service
    }
    return {"messages": messages, "services": services}
