#!/usr/bin/env bash
# Regenerate the Python for the vendored gRPC .protos (needs grpcio-tools, in the dev extra):
# KServe v2 (grpc_service.proto) and TorchServe's inference and management APIs.
# The generated files are committed; tests/unit/serve/test_rpc.py checks they are current.
# Compiled by their path under src/, so their names in protobuf's pool cannot clash with a client's.
set -euo pipefail
cd "$(dirname "$0")/../src"
for proto in grpc_service torchserve_inference torchserve_management; do
  "${PYTHON:-python}" -m grpc_tools.protoc -I. --python_out=. --pyi_out=. "inferline/serve/rpc/proto/$proto.proto"
done
