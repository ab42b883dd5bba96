#!/usr/bin/env bash
# Regenerate the Python for the vendored v2 gRPC .proto (needs grpcio-tools, in the dev extra).
# The generated files are committed; tests/unit/serve/test_rpc.py checks they are current.
# Compiled by its path under src/, so its name in protobuf's pool cannot clash with a client's.
set -euo pipefail
cd "$(dirname "$0")/../src"
"${PYTHON:-python}" -m grpc_tools.protoc -I. --python_out=. --pyi_out=. inferline/serve/rpc/proto/grpc_service.proto
