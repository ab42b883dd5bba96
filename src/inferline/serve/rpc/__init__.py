"""gRPC front doors of the server (the KServe v2 `GRPCInferenceService`), sharing its core."""
