"""Every misconfiguration of steps, hooks, labels, loaders and splits is one line naming its place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from inferline.engine.steps import build_steps
from inferline.errors import SpecError
from inferline.io.loaders import make_loader
from inferline.io.split import split_parts
from inferline.models.hooks import ModelHooks
from inferline.pipeline import SinkSpec, SourceSpec


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        (["SELECT 1"], "p.yaml: steps[0]: expected a mapping like {sql: ...} or {map: ...}"),
        (
            [{"sql": "SELECT a FROM input", "map": "m:f"}],
            "p.yaml: steps[0]: expected exactly one of sql: or map:",
        ),
        (
            [{"sql": "SELECT a FROM input", "at": "during"}],
            "p.yaml: steps[0]: at: must be before or after, got 'during'",
        ),
        ([{"map": "nomodule_xyz:f"}], "p.yaml: steps[0]: cannot import 'nomodule_xyz' for nomodule_xyz:f"),
        ([{"map": "json:no_such_function"}], "p.yaml: steps[0]: module 'json' has no 'no_such_function'"),
        ([{"map": "justaname"}], "p.yaml: steps[0]: 'justaname' should look like package.module:name"),
        (
            [{"sql": "SELECT a FROM other"}],
            "p.yaml: steps[0]: a sql step must read FROM input only, got other",
        ),
        ([{"sql": "DELETE FROM input"}], "p.yaml: steps[0]: a sql step must be one SELECT ... FROM input"),
        (
            [{"sql": "SELECT a FROM input ORDER BY a"}],
            "p.yaml: steps[0]: sql step 'SELECT a FROM input ORDER BY a' uses ORDER BY",
        ),
    ],
)
def test_bad_steps(steps: list[Any], message: str) -> None:
    with pytest.raises(SpecError) as info:
        build_steps(steps, origin="p.yaml")
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_bad_labels_and_top_k(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"^model iris: labels file .*missing.txt not found$"):
        ModelHooks(None, labels=str(tmp_path / "missing.txt"), top_k=None, where="model iris").open()
    (tmp_path / "labels.csv").write_text("0,setosa\nx,versicolor\n")
    with pytest.raises(SpecError, match=r"^model iris: labels CSV .*labels.csv: expected index,label rows$"):
        ModelHooks(None, labels=str(tmp_path / "labels.csv"), top_k=None, where="model iris").open()
    with pytest.raises(SpecError, match=r"^model iris: top_k must be >= 1, got 0$"):
        ModelHooks(None, labels=None, top_k=0, where="model iris").open()


def test_unknown_loader() -> None:
    source = SourceSpec(kind="topic", url="q.db", topic="t", load="video")
    with pytest.raises(SpecError, match=r"^p.yaml: source.load: 'video' is not supported; expected image$"):
        make_loader(source, origin="p.yaml")


@pytest.mark.parametrize(
    ("split", "message"),
    [
        (
            {"train": "most", "eval": 0.2},
            "p.yaml: sink.split.train: expected a fraction like 0.8, got 'most'",
        ),
        ({"train": 1.5, "eval": -0.5}, "p.yaml: sink.split.train: fraction must be between 0 and 1, got 1.5"),
        ({"train": 1.0}, "p.yaml: sink.split: expected two or more fractions adding up to 1"),
    ],
)
def test_bad_split(split: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError) as info:
        split_parts(SinkSpec(kind="parquet", path="out", split=split), origin="p.yaml")
    assert str(info.value).startswith(message)
