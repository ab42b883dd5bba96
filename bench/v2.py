"""Open Inference Protocol v2 on `inferline serve`: JSON vs binary REST, and gRPC, same run.

    python bench/v2.py             # one 784-float instance per request, c=64, 10 s each
    python bench/v2.py --smoke     # 1 s at c=8: checks the benchmark runs

The model is bench/serve.py's `small` ONNX MLP (784-256-10), answering the class and 10
logits. One load tool for all three, `h2load` (nghttp2-client; C, like wrk): `--h1` POSTing a
prebuilt JSON v2 body (`"data": [...]`) or a binary-extension body (JSON header + 3,136 raw
bytes, binary outputs asked for), and HTTP/2 POSTing a prebuilt gRPC `ModelInferRequest`
(`raw_input_contents`) to `/inference.GRPCInferenceService/ModelInfer`, `c` connections with
one request in flight each. Each body is checked once for a correct answer first; failures
under load are counted by the server (`inferline_requests_total` with a status other than 200,
which gRPC calls are counted in too). The ratios in the same run are what matter.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from bench.serve import free_port, make_mlp, server  # noqa: E402

GRPC_PATH = "/inference.GRPCInferenceService/ModelInfer"
HEADER_LENGTH = "Inference-Header-Content-Length"


def bodies(instance: np.ndarray) -> dict[str, tuple[bytes, dict[str, str]]]:
    """Request body and headers of each kind, for one [1, 784] FP32 instance."""
    from inferline.serve.rpc.proto import grpc_service_pb2 as pb

    tensor = {"name": "input", "shape": [1, 784], "datatype": "FP32"}
    as_json = json.dumps({"inputs": [{**tensor, "data": instance.tolist()}]}).encode()
    header = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": instance.nbytes}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    request = pb.ModelInferRequest(model_name="small")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 784])
    request.raw_input_contents.append(instance.tobytes())
    message = request.SerializeToString()
    return {
        "REST JSON": (as_json, {"content-type": "application/json"}),
        "REST binary": (header + instance.tobytes(), {HEADER_LENGTH: str(len(header))}),
        # gRPC on the wire: an uncompressed flag byte and a 4-byte big-endian length first.
        "gRPC": (
            b"\x00" + struct.pack(">I", len(message)) + message,
            {"content-type": "application/grpc", "te": "trailers"},
        ),
    }


def check(url: str, body: bytes, headers: dict[str, str], kind: str) -> None:
    if kind == "gRPC":
        import grpc

        from inferline.serve.rpc.proto import grpc_service_pb2 as pb

        with grpc.insecure_channel(url.split("//")[1].split("/")[0]) as channel:
            call = channel.unary_unary(GRPC_PATH, response_deserializer=pb.ModelInferResponse.FromString)
            answer = call(body[5:])
        if [o.name for o in answer.outputs] != ["predictions", "scores"]:
            raise RuntimeError(f"gRPC: unexpected answer {answer}")
        return
    request = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as answer:
        data = answer.read()
        size = answer.headers.get(HEADER_LENGTH)
    payload = json.loads(data[: int(size)] if size else data)
    if [o["name"] for o in payload["outputs"]] != ["predictions", "scores"]:
        raise RuntimeError(f"{kind}: unexpected answer {payload}")


def h2load(
    url: str, body: bytes, headers: dict[str, str], c: int, seconds: float, work: Path, *, h1: bool
) -> dict[str, float]:
    """Requests/s and latency percentiles (from h2load's per-request log) of one run."""
    data, log = work / "body.bin", work / "h2load.log"
    data.write_bytes(body)
    log.unlink(missing_ok=True)
    cmd = ["h2load", "-D", str(max(1, round(seconds))), "-c", str(c), "-m", "1", "-t", str(min(2, c))]
    cmd += ["-d", str(data), "--log-file", str(log)]
    for key, value in headers.items():
        cmd += ["-H", f"{key}: {value}"]
    cmd += [*(["--h1"] if h1 else []), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))  # type: ignore[union-attr]
    micros = np.array([int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.strip()])
    ms = micros / 1000 if len(micros) else np.array([float("nan")])
    return {"rps": rps, "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def failures(base: str) -> float:
    with urllib.request.urlopen(f"{base}/metrics", timeout=30) as answer:
        text = answer.read().decode()
    pattern = r'^inferline_requests_total\{model="small",status="(\d+)"\} (\S+)$'
    found = re.findall(pattern, text, re.MULTILINE)
    # 499: a call h2load cancelled when its time was up, not a failure.
    return sum(float(count) for status, count in found if status not in ("200", "499"))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="1 s at c=8: proves the benchmark runs")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        print("bench/v2.py: skipped, h2load not found (apt-get install nghttp2-client)")
        return
    seconds, c = (1.0, 8) if args.smoke else (args.seconds, args.concurrency)
    from inferline.models.store import ModelStore

    work = Path(tempfile.mkdtemp(prefix="bench-v2-"))
    try:
        make_mlp(work / "small.onnx", [784, 256, 10])
        ModelStore(str(work / "store")).add("small", str(work / "small.onnx"))
        instance = np.random.default_rng(1).random(784).astype(np.float32)
        grpc_port = free_port()
        results = {}
        with server("inferline", {}, work / "store", work, extra=("--grpc-port", str(grpc_port))) as base:
            urls = {
                "REST JSON": f"{base}/v2/models/small/infer",
                "REST binary": f"{base}/v2/models/small/infer",
                "gRPC": f"http://127.0.0.1:{grpc_port}{GRPC_PATH}",
            }
            for kind, (body, headers) in bodies(instance).items():
                h1 = kind != "gRPC"
                check(urls[kind], body, headers, kind)
                h2load(urls[kind], body, headers, 8, 1, work, h1=h1)  # warm up
                before = failures(base)
                stats = h2load(urls[kind], body, headers, c, seconds, work, h1=h1)
                stats["failed"] = failures(base) - before
                results[kind] = stats
                print(
                    f"{kind:12s} c={c:<3d} {stats['rps']:8.0f} req/s  p50 {stats['p50']:7.2f} ms  "
                    f"p99 {stats['p99']:7.2f} ms  failed {stats['failed']:.0f}",
                    flush=True,
                )
        binary, as_json, rpc = results["REST binary"], results["REST JSON"], results["gRPC"]
        print(f"binary / JSON REST: req/s x{binary['rps'] / as_json['rps']:.2f}")
        print(
            f"gRPC / binary REST: req/s x{rpc['rps'] / binary['rps']:.2f}, "
            f"p99 x{rpc['p99'] / binary['p99']:.2f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
