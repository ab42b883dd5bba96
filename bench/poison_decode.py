"""`JsonMessages.decode` on one micro-batch of 4,096 iris messages, clean and with 1% poison.

    python bench/poison_decode.py                          # 60 rounds
    python bench/poison_decode.py --baseline-ref e0a9b24   # also that commit's decoder, interleaved
    python bench/poison_decode.py --smoke                  # 3 rounds: checks it runs

The poisoned batch holds 41 poison messages, one in 100, cycling through invalid JSON, a text
`feature` and a null `feature` (as `bench/stream.py`'s 1% poison run). Each round decodes the
clean batch and the poisoned one with every decoder in turn (A B A B ...), on a stream whose
schema an earlier batch set. Figures: median and minimum wall time, median process CPU (all
threads: pyarrow may parse on its own pool), and the poison/clean ratios (of the medians, and
of the minimums, which a loaded machine disturbs least). A baseline's dead letters and good
rows must equal the current decoder's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from inferline.examples import iris_stream  # noqa: E402
from inferline.io import json_messages  # noqa: E402

BATCH = 4096
POISON = [b"not json", b'{"id": -1, "feature": "5.1,3.5,1.4,0.2"}', b'{"id": -2, "feature": null}']


def batches() -> tuple[list[bytes], list[bytes], list[bytes]]:
    """(a first batch that sets the schema, a clean batch, a batch with 1% poison)."""
    bodies = [json.dumps(m).encode() for m in iris_stream.messages(3 * BATCH)]
    poisoned = bodies[2 * BATCH :]
    for n, i in enumerate(range(0, BATCH, 100)):
        poisoned[i] = POISON[n % len(POISON)]
    return bodies[:100], bodies[BATCH : 2 * BATCH], poisoned


def baseline(ref: str, folder: Path) -> ModuleType:
    """`io/json_messages.py` as it was at `ref` (it imports only numpy and pyarrow)."""
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{ref}:src/inferline/io/json_messages.py"],
        capture_output=True,
        check=True,
    ).stdout
    path = folder / "json_messages_baseline.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("json_messages_baseline", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--baseline-ref", help="a commit of this repository whose decoder to measure too")
    parser.add_argument("--smoke", action="store_true", help="3 rounds")
    args = parser.parse_args()
    rounds = 3 if args.smoke else args.rounds
    first, clean, poisoned = batches()
    with tempfile.TemporaryDirectory(prefix="inferline-bench-poison-") as tmp:
        modules: dict[str, Any] = {"current": json_messages}
        if args.baseline_ref:
            modules = {f"before ({args.baseline_ref})": baseline(args.baseline_ref, Path(tmp)), **modules}
        decoders = {}
        for name, module in modules.items():
            decoder = module.JsonMessages(key="id", inputs=["feature"])
            decoder.decode(first)
            decoders[name] = decoder
        results = {name: d.decode(poisoned) for name, d in decoders.items()}
        current = results["current"]
        if len(current.errors) != len(range(0, BATCH, 100)):
            raise SystemExit(
                f"bench: {len(current.errors)} dead letters, expected {len(range(0, BATCH, 100))}"
            )
        for name, other in results.items():
            if other.errors != current.errors or other.good != current.good:
                raise SystemExit(f"bench: {name} decodes the poisoned batch differently")
        wall: dict[tuple[str, str], list[int]] = {}
        cpu: dict[tuple[str, str], list[int]] = {}
        for _ in range(rounds):
            for name, decoder in decoders.items():
                for kind, batch in (("clean", clean), ("poison", poisoned)):
                    started, used = time.perf_counter_ns(), time.process_time_ns()
                    decoder.decode(batch)
                    wall.setdefault((name, kind), []).append(time.perf_counter_ns() - started)
                    cpu.setdefault((name, kind), []).append(time.process_time_ns() - used)
    load = os.getloadavg()
    print(f"decode of {BATCH:,} messages, clean vs 1% poison; {rounds} rounds; load {load[0]:.1f}")
    print(
        f"{'decoder':<22} {'clean ms':>9} {'poison ms':>10} {'min clean':>10} {'min poison':>11} "
        f"{'cpu clean':>10} {'cpu poison':>11} {'ratio (median)':>15} {'ratio (min)':>12}"
    )
    for name in decoders:
        c, p = (statistics.median(wall[(name, k)]) / 1e6 for k in ("clean", "poison"))
        mc, mp = (min(wall[(name, k)]) / 1e6 for k in ("clean", "poison"))
        cc, cp = (statistics.median(cpu[(name, k)]) / 1e6 for k in ("clean", "poison"))
        print(
            f"{name:<22} {c:>9.2f} {p:>10.2f} {mc:>10.2f} {mp:>11.2f} {cc:>10.2f} {cp:>11.2f} "
            f"{p / c:>14.2f}x {mp / mc:>11.2f}x"
        )


if __name__ == "__main__":
    main()
