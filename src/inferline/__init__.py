"""inferline: run trained ML models over files, tables, streams, SQL and HTTP.

Example:
    >>> from inferline.pipeline import load_spec
    >>> from inferline.engine.local import run_pipeline
    >>> summary = run_pipeline(load_spec("examples/iris/pipeline.yaml"))  # doctest: +SKIP
"""

from __future__ import annotations

from inferline.errors import InferlineError
from inferline.io.topics.publish import publish

__version__ = "0.1.0"
__all__ = ["InferlineError", "__version__", "publish"]
