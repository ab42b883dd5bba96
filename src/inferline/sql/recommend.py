"""`ML.RECOMMEND(MODEL m[, TABLE t | (query)])` for a matrix_factorization model: BigQuery's
output columns (user, item, predicted_<rating>), computed in DuckDB from the model's factors.

The call is replaced (before the statement is parsed, as sql/model_info.py does) by a
subquery over two registered Arrow tables, the users' and the items' intercepts and factors:
without input every user-item pair; with an input of one column (users, or items) those times
every item (user); with both columns those pairs, the input's other columns passed through.
A user or item the model has not seen gives a NULL rating.

Example:
    >>> input_query("TABLE ratings")
    'SELECT * FROM ratings'
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from inferline.errors import SqlError

FACTORS = "__inferline_factors"
BIAS = "__inferline_bias"


def _quote(name: str) -> str:
    return "`" + name.replace("`", "\\`") + "`"


def input_query(text: str) -> str:
    """The input argument as a query: `TABLE t` -> SELECT * FROM t; `(SELECT ...)` unwrapped."""
    given = text.strip()
    if given[:5].upper() == "TABLE":
        return f"SELECT * FROM {given[5:].strip()}"
    if given.startswith("(") and given.endswith(")"):
        return given[1:-1]
    return given


def replacement(
    con: Any, model: Any, given: str | None, columns_of: Callable[[str], list[str]], where: str
) -> str:
    """The subquery standing for one ML.RECOMMEND call (BigQuery SQL text)."""
    if getattr(model, "model_type_", None) != "matrix_factorization":
        kind = getattr(model, "model_type_", None) or "an imported model"
        raise SqlError(f"{where}: ML.RECOMMEND takes matrix_factorization models, not {kind}")
    user, item = model.user_col_, model.item_col_
    users = _register(con, user, model.users_, model.user_bias_, model.user_factors_)
    items = _register(con, item, model.items_, model.item_bias_, model.item_factors_)
    predicted = _quote(f"predicted_{model.label_}")
    rating = f"{float(model.mean_)!r} + u.{BIAS} + i.{BIAS} + LIST_DOT_PRODUCT(u.{FACTORS}, i.{FACTORS})"
    u, i = f"u.{_quote(user)}", f"i.{_quote(item)}"
    if given is None:
        return f"(SELECT {u}, {i}, {rating} AS {predicted} FROM {users} AS u CROSS JOIN {items} AS i)"
    query = input_query(given)
    columns = columns_of(query)
    if user in columns and item in columns:
        rest = [c for c in columns if c not in (user, item)]
        passed = "".join(f", g.{_quote(c)}" for c in rest)
        gu, gi = f"g.{_quote(user)}", f"g.{_quote(item)}"
        return (
            f"(SELECT {gu}, {gi}, {rating} AS {predicted}{passed} FROM ({query}) AS g "
            f"LEFT JOIN {users} AS u ON {gu} = {u} LEFT JOIN {items} AS i ON {gi} = {i})"
        )
    if columns in ([user], [item]):
        # One column: those users (items) with every item (user), BigQuery's user, item order.
        name = columns[0]
        if name == user:
            pairs, picked = (
                f"CROSS JOIN {items} AS i LEFT JOIN {users} AS u ON g.{_quote(user)} = {u}",
                f"g.{_quote(user)}, {i}",
            )
        else:
            pairs, picked = (
                f"CROSS JOIN {users} AS u LEFT JOIN {items} AS i ON g.{_quote(item)} = {i}",
                f"{u}, g.{_quote(item)}",
            )
        return f"(SELECT {picked}, {rating} AS {predicted} FROM ({query}) AS g {pairs})"
    raise SqlError(
        f"{where}: the input must have the columns {user} and {item}, or only one of them "
        f"(got {', '.join(columns)})"
    )


def _register(con: Any, column: str, ids: list[Any], bias: Any, factors: Any) -> str:
    name = f"__inferline_recommend_{uuid.uuid4().hex[:12]}"
    table = pa.table(
        {
            column: pa.array(ids),
            BIAS: pa.array(bias, pa.float64()),
            FACTORS: pa.array([row.tolist() for row in factors], pa.list_(pa.float64())),
        }
    )
    con.register(name, table)
    return name
