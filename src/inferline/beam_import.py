"""Beam's RunInference module imported without torch.

`apache_beam.ml.inference.base` (Beam 2.77) imports its `ModelManager` when it can, and that
module imports torch and scipy: ~2 s of CPU in every `--runner beam` process and Beam worker,
even for a pipeline with no torch model, for a feature inferline never turns on
(`RunInference(use_model_manager=True)`, which imports the manager itself when it is set).
Call `import_run_inference()` before anything imports `apache_beam.ml`.

Example:
    >>> base = import_run_inference()  # doctest: +SKIP
    >>> base.RunInference  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import sys
from types import ModuleType

BASE = "apache_beam.ml.inference.base"
MANAGER = "apache_beam.ml.inference.model_manager"


def import_run_inference() -> ModuleType:
    """`apache_beam.ml.inference.base`, imported once without its model manager (torch, scipy)."""
    if BASE in sys.modules or MANAGER in sys.modules or "torch" in sys.modules:
        return importlib.import_module(BASE)  # imported already, or torch is paid for anyway
    sys.modules[MANAGER] = None  # type: ignore[assignment]  # importing it raises ImportError
    try:
        base = importlib.import_module(BASE)
    except ImportError:
        # A Beam whose base needs the manager unconditionally: pay for torch rather than fail.
        sys.modules.pop(BASE, None)
        del sys.modules[MANAGER]
        return importlib.import_module(BASE)
    del sys.modules[MANAGER]
    if getattr(base, "resource", None) is None:
        # Beam imports `resource` in the same try block and set it to None with the manager;
        # it reads the process's memory with it after loading a model.
        import resource

        base.resource = resource  # type: ignore[attr-defined]
    return base
