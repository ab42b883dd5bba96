"""beam_import.py: Beam's RunInference module imported without torch (~2 s of CPU per Beam run)."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import subprocess_env

CHECK = """
import sys
import resource
import inferline.engine.beam
from apache_beam.ml.inference import base
print("torch" in sys.modules, "scipy.optimize" in sys.modules, base.resource is resource, base.ModelManager)
"""


def test_the_beam_engine_imports_without_torch_and_keeps_memory_metrics() -> None:
    # A fresh process: this one may have imported torch already.
    command = [sys.executable, "-c", CHECK]
    env = subprocess_env()
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=True)
    assert out.stdout.split() == ["False", "False", "True", "None"]  # the manager is imported when used
