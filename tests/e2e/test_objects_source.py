"""`source: {kind: objects}`: any files as rows (uri, content_type, size, updated, data), turned
into model inputs by a hook, on the local engine and on Beam alike."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import joblib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from inferline.examples.iris import FEATURES
from tests.conftest import CliRunner

PARSE_HOOK = """
import json
import numpy as np

FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

class ParseJson:
    def preprocess(self, batch):
        flowers = [json.loads(data) for data in batch.column("data").to_pylist()]
        return np.array([[flower[f] for f in FEATURES] for flower in flowers])
"""


def _flowers(count: int) -> list[dict[str, float]]:
    from sklearn.datasets import load_iris

    data = load_iris().data
    return [dict(zip(FEATURES, map(float, data[i]), strict=True)) for i in range(count)]


def _spec(runner: str) -> str:
    spec = {
        "name": "documents",
        "source": {"kind": "objects", "path": "inbox/*.json"},
        "model": {
            "name": "iris",
            "uri": "examples/iris/models/iris-*.joblib",
            "handler": "parse_hook:ParseJson",
        },
        "keep": ["uri", "content_type", "size", "updated"],
        "sink": {"kind": "parquet", "path": f"{runner}.parquet"},
        "batch": {"max_size": 16},
    }
    Path(f"{runner}.yaml").write_text(yaml.safe_dump(spec))
    return f"{runner}.yaml"


def test_json_documents_are_classified_through_a_hook_on_both_engines(project: Path, cli: CliRunner) -> None:
    Path("parse_hook.py").write_text(PARSE_HOOK)
    inbox = Path("inbox")
    inbox.mkdir()
    flowers = _flowers(40)
    for i, flower in enumerate(flowers):
        (inbox / f"flower-{i:03d}.json").write_text(json.dumps(flower))
    (inbox / "broken.json").symlink_to(project / "nowhere.json")  # listed, cannot be read
    (inbox / "notes.txt").write_text("not matched by the glob")

    local = cli("run", _spec("local")).stdout
    assert "41 rows read, 40 predicted, 1 dead-lettered" in local
    (dead,) = [json.loads(line) for line in Path("local_errors.jsonl").read_text().splitlines()]
    broken = str((inbox / "broken.json").absolute())
    assert dead["key"] == broken and dead["stage"] == "read"
    assert dead["error"].startswith(f"{broken}: cannot read file ([Errno 2] No such file or directory")

    svc = joblib.load("examples/iris/models/iris-1.joblib")
    expected = svc.predict(np.array([[f[name] for name in FEATURES] for f in flowers])).tolist()
    table = pq.read_table("local.parquet")
    assert table.column_names == ["key", "uri", "content_type", "size", "updated", "prediction", "model_id"]
    assert table.schema.field("updated").type == pa.timestamp("us", tz="UTC")
    rows = sorted(table.to_pylist(), key=lambda r: r["key"])
    paths = sorted(str(p.absolute()) for p in inbox.glob("flower-*.json"))
    assert [r["key"] for r in rows] == [r["uri"] for r in rows] == paths
    assert [r["prediction"] for r in rows] == expected
    assert all(r["content_type"] == "application/json" for r in rows)
    assert [r["size"] for r in rows] == [os.path.getsize(p) for p in paths]

    # Beam lists files with its own matcher, which skips the dangling link; the rows agree.
    cli("run", _spec("beam"), "--runner", "beam")
    beam = sorted(pq.read_table("beam.parquet").to_pylist(), key=lambda r: r["key"])
    assert [{k: r[k] for k in ("key", "size", "prediction")} for r in beam] == [
        {k: r[k] for k in ("key", "size", "prediction")} for r in rows
    ]


def test_metadata_only_and_bytes_as_base64_in_json(project: Path, cli: CliRunner) -> None:
    Path("blobs").mkdir()
    payloads = {"a.bin": b"\x00\x01\xff", "b.txt": b"hello\n"}
    for name, payload in payloads.items():
        Path("blobs", name).write_bytes(payload)
    spec = {
        "name": "blobs",
        "source": {"kind": "objects", "path": "blobs"},
        "sink": {"kind": "jsonl", "path": "all.jsonl"},
    }
    Path("blobs.yaml").write_text(yaml.safe_dump(spec))
    cli("run", "blobs.yaml")
    got = {Path(r["uri"]).name: r for r in map(json.loads, Path("all.jsonl").read_text().splitlines())}
    assert {n: base64.b64decode(r["data"]) for n, r in got.items()} == payloads
    assert (got["a.bin"]["content_type"], got["b.txt"]["content_type"]) == (None, "text/plain")

    spec["source"]["options"] = {"data": False}  # type: ignore[index]
    spec["sink"] = {"kind": "jsonl", "path": "meta.jsonl"}
    Path("blobs.yaml").write_text(yaml.safe_dump(spec))
    cli("run", "blobs.yaml")
    meta = [json.loads(line) for line in Path("meta.jsonl").read_text().splitlines()]
    assert sorted((Path(r["uri"]).name, r["size"], r["data"]) for r in meta) == [
        ("a.bin", 3, None),
        ("b.txt", 6, None),
    ]

    spec["source"]["options"] = {"data": "no"}  # type: ignore[index]
    Path("blobs.yaml").write_text(yaml.safe_dump(spec))
    result = cli("run", "blobs.yaml", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "error: blobs.yaml: source.options.data: expected true or false, got 'no'"
