"""SQL inference on DuckDB: `predict()`/`decode_image()` functions and BigQuery-ML statements.

Example:
    >>> import inferline.sql
    >>> con = inferline.sql.connect()  # doctest: +SKIP
    >>> con.sql("SELECT predict('iris', 5.1, 3.5, 1.4, 0.2)")  # doctest: +SKIP
"""

from __future__ import annotations

from inferline.errors import require

# BigQuery-ML statements and batched object tables are parsed with sqlglot (the `sql` extra):
# without it, one line naming the extra rather than a traceback from deep inside.
require("sqlglot", "sql")

from inferline.sql.connect import Result, SqlConnection, connect  # noqa: E402

__all__ = ["Result", "SqlConnection", "connect"]
