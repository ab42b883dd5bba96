"""sql/dialect.py: BigQuery's DAYOFWEEK and geography functions mean what BigQuery says."""

from __future__ import annotations

import math

import pytest

import inferline.sql


def test_dayofweek_and_distance_follow_bigquery() -> None:
    con = inferline.sql.connect()
    try:
        con.sql("CREATE SCHEMA ds; CREATE TABLE ds.t AS SELECT DATE '2024-01-06' AS saturday")
        [(sunday, saturday, metres)] = con.sql(
            "SELECT EXTRACT(DAYOFWEEK FROM DATE '2024-01-07'), EXTRACT(DAYOFWEEK FROM saturday), "
            "ST_DISTANCE(ST_GEOGPOINT(-0.1, 51.5), ST_GEOGPOINT(-0.1, 52.5)) FROM `my-project.ds.t`"
        ).fetchall()
    finally:
        con.close()
    assert (sunday, saturday) == (1, 7)  # BigQuery: 1 = Sunday .. 7 = Saturday
    assert metres == pytest.approx(6371008.8 * math.radians(1.0))  # one degree of latitude
