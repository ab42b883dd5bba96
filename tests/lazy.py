"""Heavy libraries imported when a test first uses them, not when pytest collects its module.

Every xdist worker imports every test module at collection: torch, transformers and TensorFlow
imported there cost each worker seconds of CPU before its first test, even when it never runs
a test that needs them. `requires` finds a module without importing it; `LazyModule` imports
it on first attribute use.

    torch = LazyModule("torch")
    pytestmark = requires("torch")
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from types import ModuleType
from typing import Any

import pytest


def installed(name: str) -> bool:
    """Whether `name` (a dotted module name) can be imported; imports only its parent packages."""
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def requires(*names: str) -> pytest.MarkDecorator:
    """Skip the marked tests when a module is not installed (pytest.importorskip without the import)."""
    missing = [name for name in names if not installed(name)]
    return pytest.mark.skipif(bool(missing), reason=f"{', '.join(missing)} not installed")


class LazyModule:
    """A module imported on first attribute access: `torch = LazyModule("torch")`, then `torch.nn`."""

    def __init__(self, name: str) -> None:
        self._name = name

    def _module(self) -> ModuleType:
        with warnings.catch_warnings():
            # TorchServe's `ts/version.py` leaves version.txt open; imported at collection
            # (before), that warning never failed a test, imported in a test it would.
            warnings.simplefilter("ignore", ResourceWarning)
            return importlib.import_module(self._name)

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):  # pytest probes module globals (`__test__`, fixture markers)
            raise AttributeError(attr)
        return getattr(self._module(), attr)


# A string condition is evaluated when the test runs, so torch is not imported at collection.
without_cuda = pytest.mark.skipif(
    "__import__('torch').cuda.is_available()", reason="needs a machine without CUDA"
)
