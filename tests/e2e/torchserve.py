"""Helpers for TorchServe tests: `.mar` archives made with torch-model-archiver, PNGs."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from tests.conftest import subprocess_env


def archive(folder: Path, name: str, *args: str) -> Path:
    """`folder/name.mar`, made by torch-model-archiver from files in `folder`."""
    subprocess.run(
        [sys.executable, "-m", "model_archiver.model_packaging", "--model-name", name, *args,
         "--export-path", str(folder), "--force"],
        check=True, capture_output=True, env=subprocess_env(), cwd=folder,
    )  # fmt: skip
    return folder / f"{name}.mar"


def png(color: tuple[int, int, int], size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else color[0]).save(out, format="PNG")
    return out.getvalue()
