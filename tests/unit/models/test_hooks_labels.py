"""Label files for `labels=`: text, CSV, and TorchServe's `index_to_name.json`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inferline.errors import SpecError
from inferline.models.hooks import read_labels


def test_index_to_name_json_maps_indexes_to_labels(tmp_path: Path) -> None:
    path = tmp_path / "index_to_name.json"
    path.write_text(json.dumps({"1": ["n02", "dog"], "0": ["n01", "cat"], "3": "bird"}))
    assert read_labels(str(path), where="model m") == ["cat", "dog", "2", "bird"]


def test_a_json_list_is_labels_in_order(tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    path.write_text('["setosa", "versicolor"]')
    assert read_labels(str(path), where="model m") == ["setosa", "versicolor"]


def test_bad_json_labels_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "labels.json"
    path.write_text('{"zero": "cat"}')
    with pytest.raises(SpecError, match=r"model m: labels JSON .*: expected class indexes as keys"):
        read_labels(str(path), where="model m")
    path.write_text("{oops")
    with pytest.raises(SpecError, match=r"model m: labels file .*labels.json is not valid JSON"):
        read_labels(str(path), where="model m")
