"""HTTP serving: `inferline serve` vs a naive FastAPI endpoint vs LitServe, loaded by `wrk`.

    python bench/serve.py             # two models, c=1 and c=64, 15 s each
    python bench/serve.py --smoke     # 1 s at c=8: checks the benchmark runs

Every server runs as its own process on 127.0.0.1 and serves two ONNX MLPs built here with
random weights: `small` (784-256-10, HTTP and JSON dominate) and `large`
(784-4096-4096-4096-4096-10, >= 2 ms per single-row call: compute dominates). Each
request is one 784-float instance as JSON; every server answers with
the predicted class and the 10 logits, computed by the same inferline ONNX handler.
- naive: FastAPI, one uvicorn worker, a sync endpoint calling `predict` per request.
- litserve: LitServe with `max_batch_size=32, batch_timeout=0.005`, one worker.
- inferline: `inferline serve --models STORE` (defaults: batch_size 32, max_batch_delay 5 ms).
Load comes from `wrk` with a Lua POST script (a Python client saturates before the servers).
Figures that matter are the ratios to the baselines measured in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

# `large` must cost >= 2 ms per single-row call on this kind of CPU so that compute dominates;
# 784-2048-2048-10 measured 0.14 ms here, so it has four 4096-wide layers (about 2.4 ms).
MODELS = {"small": [784, 256, 10], "large": [784, 4096, 4096, 4096, 4096, 10]}
SERVERS = ("naive", "litserve", "inferline")


def make_mlp(path: Path, sizes: list[int], seed: int = 0) -> None:
    """An ONNX MLP (Gemm+Relu layers) with random weights; outputs: label, logits."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    current = "input"
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
        w = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        b = np.zeros(fan_out, dtype=np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = "logits" if i == len(sizes) - 2 else f"h{i}"
        nodes.append(
            helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [out + "_pre" if out != "logits" else out])
        )
        if out != "logits":
            nodes.append(helper.make_node("Relu", [out + "_pre"], [out]))
        current = out
    nodes.append(helper.make_node("ArgMax", ["logits"], ["label"], axis=1, keepdims=0))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, sizes[0]])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, [None, sizes[-1]]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def load(path: str, name: str) -> Any:
    from inferline.models.registry import load_version
    from inferline.pipeline import ModelSpec

    return load_version(ModelSpec(name=name, uri=path), path, "1")


# --- the baseline servers (run in child processes) ------------------------------------------
def run_naive(models: dict[str, str], port: int) -> None:
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()
    loaded = {name: load(path, name) for name, path in models.items()}

    @app.post("/predict/{name}")
    def predict(name: str, instance: list[float]) -> dict[str, Any]:
        result = loaded[name].predict(np.asarray([instance], dtype=np.float32))
        return {"predictions": result.prediction.tolist(), "scores": result.scores.tolist()}

    @app.get("/ping")
    def ping() -> dict[str, str]:
        return {"status": "Healthy"}

    uvicorn.run(app, host="127.0.0.1", port=port, workers=1, log_level="warning", access_log=False)


try:
    import litserve as ls
except ImportError:  # LitServe is optional: the benchmark then skips it
    ls = None

if ls is not None:

    class MLPAPI(ls.LitAPI):  # type: ignore[misc]
        """One model as a LitServe API (module level: LitServe pickles it into its worker)."""

        def __init__(self, name: str, path: str) -> None:
            super().__init__(max_batch_size=32, batch_timeout=0.005, api_path=f"/predict/{name}")
            self.model_name, self.path = name, path

        def setup(self, device: str) -> None:
            self.model = load(self.path, self.model_name)

        # No annotations here: LitServe reads them to build its request/response models.
        def decode_request(self, request):  # type: ignore[no-untyped-def]
            return np.asarray(request["input"], dtype=np.float32)

        def batch(self, inputs: list[np.ndarray]) -> np.ndarray:
            return np.stack(inputs)

        def predict(self, x: np.ndarray) -> list[dict[str, Any]]:
            result = self.model.predict(x.reshape(len(x), -1))
            return [
                {"predictions": [p], "scores": [s]}
                for p, s in zip(result.prediction.tolist(), result.scores.tolist(), strict=True)
            ]

        def unbatch(self, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return output

        def encode_response(self, output):  # type: ignore[no-untyped-def]
            return output


def run_litserve(models: dict[str, str], port: int) -> None:
    apis = [MLPAPI(name, path) for name, path in models.items()]
    server = ls.LitServer(apis, accelerator="cpu", workers_per_device=1, healthcheck_path="/ping")
    server.run(host="127.0.0.1", port=port, generate_client_file=False)


# --- the load generator ----------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def server(
    kind: str, models: dict[str, str], store: Path, workdir: Path, extra: tuple[str, ...] = ()
) -> Iterator[str]:
    port = free_port()
    if kind == "inferline":
        cmd = [sys.executable, "-m", "inferline", "serve", "--models", str(store), "--port", str(port)]
        cmd += extra
    else:
        cmd = [
            sys.executable,
            __file__,
            "--run-server",
            kind,
            "--port",
            str(port),
            "--models-json",
            json.dumps(models),
        ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    log = open(workdir / f"{kind}.log", "w+")  # noqa: SIM115
    # A process group (to kill LitServe's workers with the server) but not a new session: with
    # the kernel's autogroup scheduling a new session would get its own CPU share, unlike wrk.
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, process_group=0)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"{kind} exited {proc.returncode}:\n{log.read()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{base}/ping", timeout=1) as answer:
                    if answer.status == 200:
                        break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind} not ready on {base}")
            time.sleep(0.1)
        yield base
    finally:
        stop_group(proc, grace=15)
        log.close()


def path_of(kind: str, model: str) -> str:
    return f"/predictions/{model}" if kind == "inferline" else f"/predict/{model}"


def wrk(url: str, body: str, connections: int, seconds: float, workdir: Path) -> dict[str, float]:
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n"
    )
    threads = min(2, connections)
    out = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return wrk_figures(out)


def wrk_figures(out: str) -> dict[str, float]:
    """req/s, requests, p50/p99 ms, non-2xx answers and socket errors from `wrk --latency`'s output."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    requests = float(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": rps,
        "requests": requests,
        "p50": _latency_ms(out, "50%"),
        "p99": _latency_ms(out, "99%"),
        "failed": float(failed.group(1)) if failed else 0.0,
        "socket_errors": float(sum(int(g) for g in errors.groups())) if errors else 0.0,
    }


def _latency_ms(out: str, percentile: str) -> float:
    match = re.search(rf"^\s+{re.escape(percentile)}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def check_answer(base: str, path: str, body: str) -> None:
    request = urllib.request.Request(
        f"{base}{path}", data=body.encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        payload = json.loads(answer.read())
    if "predictions" not in payload:
        raise RuntimeError(f"{base}{path}: unexpected answer {payload}")


def stop_group(proc: subprocess.Popen[bytes], *, grace: float) -> None:
    """SIGTERM `proc`'s process group, then SIGKILL what is left of it after `grace` seconds.

    LitServe's workers (and a server's worker processes) can outlive their parent on SIGTERM.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(15)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="1 s at c=8: proves the benchmark runs")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--run-server", choices=("naive", "litserve"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--models-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_server:
        models = json.loads(args.models_json)
        (run_naive if args.run_server == "naive" else run_litserve)(models, args.port)
        return
    seconds = 1.0 if args.smoke else args.seconds
    levels = [8] if args.smoke else [int(c) for c in args.concurrency.split(",")]
    kinds = [k for k in args.servers.split(",") if k and (k != "litserve" or ls is not None)]

    from inferline.models.store import ModelStore

    workdir = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    store = ModelStore(str(workdir / "store"))
    models = {}
    for name, sizes in MODELS.items():
        path = workdir / f"{name}.onnx"
        make_mlp(path, sizes)
        store.add(name, str(path))
        models[name] = str(path)
    instance = np.random.default_rng(1).random(784).round(4).tolist()

    try:
        results = measure(kinds, models, instance, levels, seconds, workdir, smoke=args.smoke)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(results, levels)


def measure(
    kinds: list[str],
    models: dict[str, str],
    instance: list[float],
    levels: list[int],
    seconds: float,
    workdir: Path,
    *,
    smoke: bool,
) -> dict[tuple[str, int, str], dict[str, float]]:
    results: dict[tuple[str, int, str], dict[str, float]] = {}
    for kind in kinds:
        # LitServe decodes a JSON object; the others take the instance as a JSON list.
        body = json.dumps({"input": instance} if kind == "litserve" else instance)
        with server(kind, models, workdir / "store", workdir) as base:
            for model in MODELS:
                check_answer(base, path_of(kind, model), body)
                wrk(base + path_of(kind, model), body, 8, 1 if smoke else 3, workdir)  # warm up
                for c in levels:
                    results[(model, c, kind)] = stats = wrk(
                        base + path_of(kind, model), body, c, seconds, workdir
                    )
                    print(
                        f"{model:6s} c={c:<3d} {kind:10s} {stats['rps']:9.0f} req/s"
                        f"  p50 {stats['p50']:7.2f} ms"
                        f"  p99 {stats['p99']:7.2f} ms  failed {stats['failed']:.0f}"
                        f"  socket errors {stats['socket_errors']:.0f}",
                        flush=True,
                    )
    return results


def report(results: dict[tuple[str, int, str], dict[str, float]], levels: list[int]) -> None:
    print("\nratios (inferline / baseline): req/s, p99")
    for model in MODELS:
        for c in levels:
            mine = results.get((model, c, "inferline"))
            if mine is None:
                continue
            for baseline in ("naive", "litserve"):
                other = results.get((model, c, baseline))
                if other is None or not other["rps"]:
                    continue
                print(
                    f"{model:6s} c={c:<3d} vs {baseline:9s} req/s x{mine['rps'] / other['rps']:.2f}"
                    f"  p99 x{mine['p99'] / other['p99']:.2f}"
                )


if __name__ == "__main__":
    main()
