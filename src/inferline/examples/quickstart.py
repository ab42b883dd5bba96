"""What `inferline quickstart` does for every example: place its pipeline's paths under the
chosen `--root`, run the pipeline with the run recorded in the history, show a few rows."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from inferline.pipeline import PipelineSpec

_PLAIN = re.compile(r"[A-Za-z0-9_./*\-]+")  # a YAML plain scalar needs no quotes


def relocate(text: str, default: str, root: str) -> str:
    """The packaged pipeline YAML `text`, with every path under `default` moved under `root`.

    Example:
        >>> relocate("source: {kind: csv, path: examples/iris/data/*.csv}", "examples/iris", "demo/iris")
        'source: {kind: csv, path: demo/iris/data/*.csv}'
        >>> relocate("uri: examples/iris/m-*.onnx  # newest", "examples/iris", "my demo/iris")
        'uri: "my demo/iris/m-*.onnx"  # newest'
    """
    prefix = default.rstrip("/") + "/"
    target = root.rstrip("/") + "/" if root.rstrip("/") else "/"

    def moved(match: re.Match[str]) -> str:
        path = target + match.group(0)[len(prefix) :]
        return path if _PLAIN.fullmatch(path) else json.dumps(path)  # JSON strings are YAML

    return re.sub(re.escape(prefix) + r"[^\s,}\]]*", moved, text)


def run_example(pipeline: str, out: Console) -> PipelineSpec:
    """Run the example's pipeline as `inferline run` would, recording it in the run history."""
    from inferline.engine.local import LocalEngine
    from inferline.pipeline import load_spec
    from inferline.progress import print_summary
    from inferline.report.runs import record_run

    spec = load_spec(pipeline)
    engine = LocalEngine(spec)
    with record_run(spec, engine.stats) as history:
        summary = history.summary = engine.run()
    print_summary(out, summary)
    return spec


def numeric_key_order() -> str:
    """An ORDER BY for a preview: numeric keys as numbers (0, 1, 2 ... not 0, 1, 10, 100)."""
    return "ORDER BY TRY_CAST(key AS BIGINT) NULLS LAST, key"
