"""Messages that name files (as bucket notifications do): `load: image` decodes them first."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import yaml

from inferline.io.images import ImageSettings, decode_image
from tests.conftest import CliRunner
from tests.lazy import LazyModule

torch = LazyModule("torch")
digits = LazyModule("inferline.examples.digits")  # imports torch


def test_stream_of_image_paths_is_classified_and_a_missing_file_dead_lettered(
    project: Path, digits_example: Path, cli: CliRunner
) -> None:
    root = project / "examples" / "digits"
    shutil.copytree(digits_example, root)
    pngs = sorted((root / "images").glob("*.png"))[:40]
    lines = []
    for i, png in enumerate(pngs):
        # Both shapes a notification may take: an object naming the file, or a bare path.
        lines.append(json.dumps({"uri": str(png)}) if i % 2 else json.dumps(str(png)))
    missing = root / "images" / "gone.png"
    lines.insert(7, json.dumps({"uri": str(missing)}))
    Path("notifications.jsonl").write_text("\n".join(lines) + "\n")
    cli("publish", "arrivals", "--url", "queue.db", "--from", "notifications.jsonl")

    spec = yaml.safe_load((root / "pipeline.yaml").read_text())
    spec["name"] = "arrivals"
    spec["source"] = {
        "kind": "topic",
        "url": "queue.db",
        "topic": "arrivals",
        "load": "image",
        "mode": "L",
        "resize": [28, 28],
        "scale": 255,
        "layout": "NCHW",
    }
    spec["sink"] = {"kind": "duckdb", "path": "warehouse.duckdb", "table": "arrivals"}
    spec["batch"] = {"max_size": 16, "max_wait_ms": 50}
    Path("arrivals.yaml").write_text(yaml.safe_dump(spec))
    result = cli("run", "arrivals.yaml", "--until-idle", "1.5")
    assert "41 rows read, 40 predicted, 1 dead-lettered" in result.stdout

    with duckdb.connect("warehouse.duckdb") as con:
        got = dict(con.execute("SELECT uri, prediction FROM arrivals").fetchall())
        dead = con.execute("SELECT raw, error, stage FROM arrivals_errors").fetchall()
    settings = ImageSettings(mode="L", resize=(28, 28), scale=255)
    model = digits.DigitsCNN(width=16)
    model.load_state_dict(torch.load(root / "models" / "digits-1.pt", weights_only=True))
    model.eval()
    with torch.no_grad():
        pixels = torch.from_numpy(np.stack([decode_image(p.read_bytes(), settings) for p in pngs]))
        expected = model(pixels).argmax(dim=1).tolist()
    assert {str(p): got[str(p)] for p in pngs} == dict(zip(map(str, pngs), expected, strict=True))
    assert len(dead) == 1
    raw, error, stage = dead[0]
    assert json.loads(raw)["uri"] == str(missing)
    assert error == f"{missing}: file not found" and stage == "load"
