"""Real TorchServe 0.12 vs `inferline serve` on the same `.mar` archives, loaded by `wrk`.

    python bench/torchserve.py                 # 3 repeats, 10 s each at wrk -c32
    python bench/torchserve.py --smoke         # 1 s each: checks the benchmark runs

Skips with one line when `java`, `wrk`, the `torchserve` package or torch-model-archiver is
missing. Three archives are built here with torch-model-archiver from one TorchScript CNN:
- `scripted`: the CNN with a module-level `handle(data, context)` (TorchServe's other custom
  handler form, no `ts` import): Pillow decode, 64x64 resize, softmax, `{class, probability}`;
- `cnn`: the same work as a custom `BaseHandler` subclass (preprocess/postprocess);
- `classifier`: TorchServe's built-in `image_classifier` with `index_to_name.json` (resize 256,
  crop 224, normalise, top-5 `{label: probability}`).
TorchServe's worker has no torchvision here (PyPI only has a CUDA build), so its
`image_classifier` imports inferline's Pillow stand-in of `torchvision.transforms`
(`inferline.models.ts_compat`) from a folder put on its PYTHONPATH.

Each request is a PNG POSTed as raw bytes with no Content-Type (what `curl -T img.png` sends,
as a POST), from a wrk Lua script holding the body. TorchServe runs as `torchserve --start
--ncs` (token auth off, `OMP_NUM_THREADS=1`) in each configuration of `--ts-configs`
(workers x batch size); inferline as `inferline serve --model-store DIR --models ...` with each
argument set of `--inferline-configs`. Every configuration is measured `--repeats` times,
interleaved (A, B, A, B, ...) so load changes on a shared machine hit both alike; the report
gives medians and each server's best configuration's ratio.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from serve import stop_group, wrk_figures  # noqa: E402

MODELS = ("scripted", "cnn", "classifier")
IMAGE_SIZE = (64, 64)

HANDLER = '''
import io

import numpy as np
import torch
from PIL import Image
from ts.torch_handler.base_handler import BaseHandler


class CnnHandler(BaseHandler):
    """Decodes each PNG to a 64x64 RGB tensor in [0, 1]; answers the top class."""

    def preprocess(self, data):
        images = []
        for row in data:
            raw = row.get("data") or row.get("body")
            with Image.open(io.BytesIO(raw)) as image:
                pixels = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.float32)
            images.append(torch.from_numpy(pixels.transpose(2, 0, 1) / 255.0))
        return torch.stack(images)

    def postprocess(self, data):
        probabilities = torch.softmax(data, dim=1)
        best, classes = probabilities.max(dim=1)
        return [{"class": int(c), "probability": float(p)} for p, c in zip(best, classes)]
'''

MODULE_HANDLER = '''
import io
import os

import numpy as np
import torch
from PIL import Image

model = None


def handle(data, context):
    """Loads the TorchScript CNN once; answers each PNG's top class."""
    global model
    if model is None:
        properties = context.system_properties
        path = os.path.join(properties["model_dir"], context.manifest["model"]["serializedFile"])
        model = torch.jit.load(path).eval()
    if data is None:
        return None
    images = []
    for row in data:
        raw = row.get("data") or row.get("body")
        with Image.open(io.BytesIO(raw)) as image:
            pixels = np.asarray(image.convert("RGB").resize((64, 64)), dtype=np.float32)
        images.append(torch.from_numpy(pixels.transpose(2, 0, 1) / 255.0))
    with torch.no_grad():
        probabilities = torch.softmax(model(torch.stack(images)), dim=1)
    best, classes = probabilities.max(dim=1)
    return [{"class": int(c), "probability": float(p)} for p, c in zip(best, classes)]
'''

# Lets TorchServe's own image_classifier import without torchvision (see the module docstring).
TORCHVISION_SHIM = {
    "torchvision/__init__.py": '__version__ = "0.0.0+inferline"\nfrom torchvision import transforms\n',
    "torchvision/transforms/__init__.py": (
        "from inferline.models.ts_compat import (\n"
        "    CenterCrop, Compose, Grayscale, Normalize, Resize, ToTensor,\n)\n"
    ),
    "captum/__init__.py": "",
    "captum/attr/__init__.py": (
        "from inferline.models.ts_compat import (\n"
        "    IntegratedGradients, LayerIntegratedGradients, TokenReferenceBase,\n)\n"
    ),
}


def missing_tools() -> list[str]:
    missing = [tool for tool in ("java", "wrk") if shutil.which(tool) is None]
    for module, package in (
        ("ts", "torchserve"),
        ("model_archiver", "torch-model-archiver"),
        ("torch", "torch"),
    ):
        if importlib.util.find_spec(module) is None:
            missing.append(f"the {package} package")
    if shutil.which("torchserve", path=os.path.dirname(sys.executable)) is None:
        missing.append("the torchserve command")
    return missing


# --- the archives -------------------------------------------------------------------------
def build_archives(folder: Path) -> Path:
    """`folder/store/{scripted,cnn,classifier}.mar` and `folder/image.png`; returns the store."""
    import warnings

    import numpy as np
    import torch
    from PIL import Image

    torch.manual_seed(0)
    cnn = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 5, stride=4),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 10),
    ).eval()
    with warnings.catch_warnings():  # TorchScript is deprecated upstream; TorchServe archives use it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(cnn).save(str(folder / "cnn.pt"))
    (folder / "cnn_handler.py").write_text(HANDLER)
    (folder / "scripted_handler.py").write_text(MODULE_HANDLER)
    (folder / "index_to_name.json").write_text(json.dumps({str(i): f"class-{i}" for i in range(10)}))
    store = folder / "store"
    store.mkdir()
    archive(folder, store, "scripted", "--serialized-file", "cnn.pt", "--handler", "scripted_handler.py")
    archive(folder, store, "cnn", "--serialized-file", "cnn.pt", "--handler", "cnn_handler.py")
    archive(folder, store, "classifier", "--serialized-file", "cnn.pt", "--handler", "image_classifier",
            "--extra-files", "index_to_name.json")  # fmt: skip

    rng = np.random.default_rng(0)
    gradient = np.linspace(0, 255, IMAGE_SIZE[0], dtype=np.float32)
    pixels = np.stack([gradient[None, :] + 0 * gradient[:, None], gradient[:, None] + 0 * gradient[None, :],
                       rng.uniform(0, 64, IMAGE_SIZE)], axis=-1)  # fmt: skip
    out = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(out, format="PNG")
    (folder / "image.png").write_bytes(out.getvalue())
    return store


def archive(folder: Path, store: Path, name: str, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "model_archiver.model_packaging", "--model-name", name, "--version", "1.0",
         *args, "--export-path", str(store), "--force"],
        check=True, capture_output=True, cwd=folder,
    )  # fmt: skip


# --- the servers --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(
    base: str, models: tuple[str, ...], what: str, alive: Callable[[], bool], deadline_s: float = 180.0
) -> None:
    """Until every model answers a real prediction (TorchServe pings healthy before its workers)."""
    deadline = time.monotonic() + deadline_s
    while True:
        if not alive():
            raise RuntimeError(f"{what} exited before it was ready")
        try:
            for model in models:
                predict(base, model, b"")
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready on {base} after {deadline_s:.0f} s")
        time.sleep(0.5)


IMAGE: bytes = b""


def predict(base: str, model: str, body: bytes) -> object:
    request = urllib.request.Request(
        f"{base}/predictions/{model}",
        data=body or IMAGE,
        method="POST",
        headers={"Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def env_for(workdir: Path) -> dict[str, str]:
    paths = [str(workdir / "shim"), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
        "OMP_NUM_THREADS": "1",
        "TMPDIR": str(workdir / "tmp"),  # TorchServe's pid file lives there: no clash with others
    }


@contextlib.contextmanager
def torchserve(store: Path, workdir: Path, workers: int, batch_size: int) -> Iterator[tuple[str, int]]:
    port, management, metrics = free_port(), free_port(), free_port()
    models = {
        name: {"1.0": {"defaultVersion": True, "marName": f"{name}.mar", "minWorkers": workers,
                       "maxWorkers": workers, "batchSize": batch_size, "maxBatchDelay": 5,
                       "responseTimeout": 120}}
        for name in MODELS
    }  # fmt: skip
    config = workdir / "config.properties"
    config.write_text(
        f"inference_address=http://127.0.0.1:{port}\n"
        f"management_address=http://127.0.0.1:{management}\n"
        f"metrics_address=http://127.0.0.1:{metrics}\n"
        "disable_token_authorization=true\n"
        "enable_model_api=false\n"
        f"default_workers_per_model={workers}\n"
        "job_queue_size=1000\n"
        f"models={json.dumps(models)}\n"
    )
    env = env_for(workdir)
    command = str(Path(sys.executable).parent / "torchserve")
    log = open(workdir / "torchserve.log", "w+")  # noqa: SIM115
    subprocess.run(
        [command, "--start", "--ncs", "--model-store", str(store), "--ts-config", str(config),
         "--disable-token-auth", "--models", *[f"{name}={name}.mar" for name in MODELS]],
        check=True, env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    pid_file = workdir / "tmp" / ".model_server.pid"
    java = int(pid_file.read_text().strip()) if pid_file.exists() else None
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_ready(base, MODELS, "TorchServe", lambda: java is None or _alive(java))
        except RuntimeError:
            logs = sorted((workdir / "logs").glob("*.log"))
            print("".join(p.name + ":\n" + p.read_text()[-3000:] for p in logs), file=sys.stderr)
            raise
        yield base, java or 0
    finally:
        subprocess.run([command, "--stop"], env=env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
        if java is not None:  # make sure no Java (nor its Python workers) is left behind
            _wait_gone(java, 30)
        log.close()


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) used so far by `root` and its descendants (from /proc)."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
                ticks[int(entry)] = int(fields[11]) + int(fields[12])
    tree, added = {root}, True
    while added:
        new = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= new
        added = bool(new)
    return sum(ticks.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_gone(pid: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def inferline(store: Path, workdir: Path, extra: list[str]) -> Iterator[tuple[str, int]]:
    port = free_port()
    env = env_for(workdir)
    while extra and "=" in extra[0] and not extra[0].startswith("-"):  # NAME=VALUE: the server's environment
        name, _, value = extra.pop(0).partition("=")
        env[name] = value
    command = [sys.executable, "-m", "inferline", "serve", "--model-store", str(store), "--port", str(port),
               "--management-port", str(free_port()),
               "--grpc-port", "0", "--watch-interval", "0"]  # fmt: skip
    command += [arg for name in MODELS for arg in ("--models", f"{name}={name}.mar")] + extra
    log = open(workdir / "inferline.log", "w+")  # noqa: SIM115
    # A process group to stop every process it starts; no new session (kernel autogroups would
    # give it a CPU share of its own, unlike wrk's).
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, process_group=0)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, MODELS, "inferline serve", lambda: proc.poll() is None)
        yield base, proc.pid
    finally:
        stop_group(proc, grace=20)
        log.close()


# --- the load -----------------------------------------------------------------------------
def lua_body(body: bytes) -> str:
    return "".join(f"\\{b}" for b in body)


def wrk(url: str, image: Path, connections: int, seconds: float, workdir: Path) -> dict[str, float]:
    script = workdir / "post.lua"
    script.write_text(f'wrk.method = "POST"\nwrk.body = "{lua_body(image.read_bytes())}"\n')
    duration = f"-d{max(1, round(seconds))}s"
    command = ["wrk", "-t2", f"-c{connections}", duration, "--latency", "-s", str(script), url]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return wrk_figures(out)


@dataclass(frozen=True)
class Setup:
    server: str  # torchserve | inferline
    label: str
    args: tuple[str, ...]  # inferline's extra arguments, or (workers, batch size) for TorchServe

    def start(self, store: Path, workdir: Path) -> contextlib.AbstractContextManager[tuple[str, int]]:
        if self.server == "torchserve":
            return torchserve(store, workdir, int(self.args[0]), int(self.args[1]))
        return inferline(store, workdir, list(self.args))


def setups(ts_configs: str, inferline_configs: list[str]) -> list[Setup]:
    out = []
    for config in ts_configs.split(","):
        workers, _, batch = config.partition("x")
        out.append(Setup("torchserve", f"torchserve w{workers} b{batch or 1}", (workers, batch or "1")))
    for extra in inferline_configs:
        out.append(Setup("inferline", f"inferline {extra}".strip(), tuple(extra.split())))
    return out


Results = dict[tuple[str, str], list[dict[str, float]]]


def measure(all_setups: list[Setup], store: Path, workdir: Path, *, repeats: int, seconds: float,
            connections: int, models: tuple[str, ...] = MODELS) -> Results:  # fmt: skip
    results: Results = {}
    for repeat in range(repeats):
        for setup in all_setups:
            with setup.start(store, workdir) as (base, pid):
                for model in models:
                    wrk(
                        f"{base}/predictions/{model}",
                        workdir / "image.png",
                        connections,
                        min(seconds, 3),
                        workdir,
                    )
                    cpu = tree_cpu_s(pid)
                    stats = wrk(
                        f"{base}/predictions/{model}", workdir / "image.png", connections, seconds, workdir
                    )
                    # CPU per request: how much of the machine each answer costs, whatever the load.
                    stats["cpu_ms"] = (tree_cpu_s(pid) - cpu) * 1000 / max(1.0, stats["requests"])
                    results.setdefault((setup.label, model), []).append(stats)
                    print(
                        f"run {repeat + 1} {model:10s} {setup.label:34s} {stats['rps']:8.0f} req/s"
                        f"  p50 {stats['p50']:7.2f} ms  p99 {stats['p99']:7.2f} ms"
                        f"  cpu {stats['cpu_ms']:.2f} ms/req"
                        f"  non-2xx {stats['failed']:.0f}  socket errors {stats['socket_errors']:.0f}"
                        f"  load {os.getloadavg()[0]:.1f}",
                        flush=True,
                    )
    return results


def report(all_setups: list[Setup], results: Results) -> None:
    print("\nmedians over repeats")
    medians: dict[tuple[str, str], tuple[float, float]] = {}
    for setup in all_setups:
        for model in MODELS:
            runs = results.get((setup.label, model), [])
            if runs:
                rps = statistics.median(r["rps"] for r in runs)
                p99 = statistics.median(r["p99"] for r in runs)
                cpu = statistics.median(r["cpu_ms"] for r in runs)
                medians[(setup.label, model)] = (rps, p99)
                print(
                    f"{model:10s} {setup.label:34s} {rps:8.0f} req/s  p99 {p99:7.2f} ms  cpu {cpu:.2f} ms/req"
                )
    print("\nratios: each inferline setup / TorchServe's best setup for that model (median req/s)")
    for model in MODELS:
        ts = [(medians[(s.label, model)], s.label) for s in all_setups if s.server == "torchserve"
              and (s.label, model) in medians]  # fmt: skip
        if not ts:
            continue
        (best_rps, best_p99), best_label = max(ts)
        if best_rps == 0:  # no answer within a run (a short smoke run on a loaded machine)
            print(f"{model:10s} no ratio: TorchServe answered no request in its runs")
            continue
        for setup in all_setups:
            if setup.server == "inferline" and (setup.label, model) in medians:
                rps, p99 = medians[(setup.label, model)]
                print(f"{model:10s} {setup.label:34s} vs {best_label}: req/s x{rps / best_rps:.2f}  "
                      f"p99 {p99:.2f} vs {best_p99:.2f} ms (x{p99 / best_p99:.2f})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true", help="1 s per load, one repeat: proves it runs")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--ts-configs", default="2x1,2x8", help="TorchServe's WORKERSxBATCH settings")
    parser.add_argument("--inferline-config", action="append", default=None,
                        help="inferline serve arguments of one setup (repeatable)")  # fmt: skip
    parser.add_argument("--servers", default="torchserve,inferline")
    parser.add_argument("--models", default=",".join(MODELS),
                        help="the archives to load with wrk (every server serves all three)")  # fmt: skip
    args = parser.parse_args()
    models = tuple(m for m in MODELS if m in args.models.split(","))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on the way out
    missing = missing_tools()
    if missing:
        print(f"bench/torchserve.py: skipped ({', '.join(missing)} not found)")
        return
    inferline_configs = args.inferline_config or [""]
    seconds, repeats = (1.0, 1) if args.smoke else (args.seconds, args.repeats)
    ts_configs = "2x1" if args.smoke else args.ts_configs
    chosen = [s for s in setups(ts_configs, inferline_configs) if s.server in args.servers.split(",")]

    workdir = Path(tempfile.mkdtemp(prefix="bench-torchserve-"))
    (workdir / "tmp").mkdir()
    for name, text in TORCHVISION_SHIM.items():
        (workdir / "shim" / name).parent.mkdir(parents=True, exist_ok=True)
        (workdir / "shim" / name).write_text(text)
    try:
        store = build_archives(workdir)
        global IMAGE
        IMAGE = (workdir / "image.png").read_bytes()
        print(f"{len(IMAGE)}-byte {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} PNG, wrk -c{args.connections}, "
              f"{seconds:.0f} s per run, load average {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
        results = measure(
            chosen, store, workdir, repeats=repeats, seconds=seconds, connections=args.connections,
            models=models,
        )  # fmt: skip
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(chosen, results)


if __name__ == "__main__":
    main()
