"""Vendored .proto files and the Python protoc generated from them (scripts/gen_grpc.sh)."""
