"""beam_import.py: Beam's RunInference module imported without torch (~2 s of CPU per Beam run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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


def test_a_beam_that_needs_its_manager_is_imported_with_it(tmp_path: Path) -> None:
    # A later Beam might import its manager outside the try block: importing must then still work.
    package = tmp_path / "fakebeam"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "manager.py").write_text("MANAGER = 'loaded'\n")
    (package / "base.py").write_text("from fakebeam.manager import MANAGER\n")
    check = (
        "import inferline.beam_import as b\n"
        "b.BASE, b.MANAGER = 'fakebeam.base', 'fakebeam.manager'\n"
        "print(b.import_run_inference().MANAGER)\n"
    )
    env = subprocess_env()
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    command = [sys.executable, "-c", check]
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=True)
    assert out.stdout.split() == ["loaded"]
