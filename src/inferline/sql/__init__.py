"""SQL inference on DuckDB: `predict()`/`decode_image()` functions and BigQuery-ML statements.

Example:
    >>> import inferline.sql
    >>> con = inferline.sql.connect()  # doctest: +SKIP
    >>> con.sql("SELECT predict('iris', 5.1, 3.5, 1.4, 0.2)")  # doctest: +SKIP
"""

from __future__ import annotations

from inferline.sql.connect import Result, SqlConnection, connect

__all__ = ["Result", "SqlConnection", "connect"]
