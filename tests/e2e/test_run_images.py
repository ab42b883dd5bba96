"""`inferline run` / `quickstart digits` over a folder of PNGs with the digits CNN, end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np

from inferline.io.images import ImageSettings, decode_image
from tests.conftest import CliRunner
from tests.lazy import LazyModule, without_cuda

torch = LazyModule("torch")
digits = LazyModule("inferline.examples.digits")  # imports torch


def _copy_digits(project: Path, digits_example: Path) -> Path:
    target = project / "examples" / "digits"
    shutil.copytree(digits_example, target)
    return target


def test_pipeline_predicts_like_a_direct_forward_pass_and_dead_letters_a_corrupt_png(
    project: Path, digits_example: Path, cli: CliRunner
) -> None:
    root = _copy_digits(project, digits_example)
    (root / "images" / "7_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    result = cli("run", "examples/digits/pipeline.yaml", "--set", "batch.max_size=64")
    pngs = sorted(p for p in (root / "images").glob("*.png") if "corrupt" not in p.name)
    assert f"{len(pngs) + 1} rows read, {len(pngs)} predicted, 1 dead-lettered" in result.stdout

    with duckdb.connect("warehouse.duckdb") as con:
        got = dict(con.execute("SELECT key, prediction FROM digits_predictions").fetchall())
        columns = [r[0] for r in con.execute("DESCRIBE digits_predictions").fetchall()]
        (accuracy,) = con.execute(digits.ACCURACY_SQL.format(table="digits_predictions")).fetchall()[0][1:]
        dead = con.execute("SELECT key, error, stage FROM digits_predictions_errors").fetchall()
    assert columns == ["key", "uri", "width", "height", "prediction", "scores", "model_id"]
    assert accuracy >= 0.9

    settings = ImageSettings(mode="L", resize=(28, 28), scale=255)
    pixels = np.stack([decode_image(p.read_bytes(), settings) for p in pngs])
    model = digits.DigitsCNN(width=16)
    model.load_state_dict(torch.load(root / "models" / "digits-1.pt", weights_only=True))
    model.eval()
    with torch.no_grad():
        expected = model(torch.from_numpy(pixels)).argmax(dim=1).tolist()
    assert [got[str(p)] for p in pngs] == expected

    assert len(dead) == 1
    key, error, stage = dead[0]
    assert key == str(root / "images" / "7_corrupt.png")
    assert error.startswith(f"{key}: cannot decode image: ") and stage == "decode"


def test_quickstart_digits_runs_the_example(project: Path, digits_example: Path, cli: CliRunner) -> None:
    _copy_digits(project, digits_example)
    result = cli("quickstart", "digits")
    assert "digits: 360 rows read, 360 predicted, 0 dead-lettered" in result.stdout
    assert "accuracy" in result.stdout


@without_cuda
def test_cuda_on_a_cpu_machine_is_one_clear_line(project: Path, digits_example: Path, cli: CliRunner) -> None:
    _copy_digits(project, digits_example)
    result = cli("run", "examples/digits/pipeline.yaml", "--set", "model.device=cuda", check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("error: model ")
    assert "digits-1.pt: device cuda requested but CUDA is not available on this machine" in result.stderr
    assert "use device: cpu or auto" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
