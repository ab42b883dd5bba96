"""BigQuery functions whose DuckDB namesakes mean something else, or that DuckDB lacks without
an extension, rewritten in translated statements so Google's tutorials mean what they say:

- `EXTRACT(DAYOFWEEK FROM d)`: BigQuery counts 1 (Sunday) .. 7 (Saturday), DuckDB 0 .. 6;
- `ST_GEOGPOINT(lon, lat)` and `ST_DISTANCE(a, b)` (the k-means tutorial's distance to the city
  centre): a point is a {lon, lat} struct, the distance the great-circle distance in metres on
  a sphere of radius 6,371,008.8 m (the mean Earth radius), without DuckDB's spatial extension.

Example:
    >>> import sqlglot
    >>> tree = sqlglot.parse_one("SELECT EXTRACT(DAYOFWEEK FROM d) FROM t", read="bigquery")
    >>> rewrite(tree).sql("duckdb")
    'SELECT (EXTRACT(DAYOFWEEK FROM d) + 1) FROM t'
"""

from __future__ import annotations

from sqlglot import exp

MACROS = """
CREATE OR REPLACE TEMP MACRO __bq_st_geogpoint(lon, lat) AS {'lon': lon::DOUBLE, 'lat': lat::DOUBLE};
CREATE OR REPLACE TEMP MACRO __bq_st_distance(a, b) AS
  2 * 6371008.8 * asin(sqrt(
    pow(sin(radians(b.lat - a.lat) / 2), 2)
    + cos(radians(a.lat)) * cos(radians(b.lat)) * pow(sin(radians(b.lon - a.lon) / 2), 2)));
"""


def rewrite(tree: exp.Expr) -> exp.Expr:
    """Rewrite the functions above in place; the tree."""
    for node in list(tree.find_all(exp.Extract)):
        if isinstance(node.this, exp.Var) and node.this.name.upper() == "DAYOFWEEK":
            node.replace(exp.Paren(this=exp.Add(this=node.copy(), expression=exp.Literal.number(1))))
    for call in list(tree.find_all(exp.Anonymous)):
        if call.name.upper() == "ST_GEOGPOINT":
            call.replace(exp.Anonymous(this="__bq_st_geogpoint", expressions=list(call.expressions)))
    for distance in list(tree.find_all(exp.StDistance)):
        args = [distance.this, distance.expression]
        distance.replace(exp.Anonymous(this="__bq_st_distance", expressions=args))
    return tree
