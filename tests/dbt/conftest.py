"""Helpers of the dbt tier (the built warehouse fixtures live in tests/conftest.py)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import polars as pl

from memberflow.land import land_pending
from memberflow.transform import build_warehouse

START = date(2026, 1, 1)
DAYS = 60


def land_and_build(settings, data_dir: Path, as_of: date | None = None):
    """Land (extract, landing gate, publish) every pending partition, then build; any failure raises."""
    run = land_pending(settings, data_dir, as_of)
    assert run.ok, run.errors
    return build_warehouse(settings, as_of)


def query(settings, sql: str) -> pl.DataFrame:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return con.sql(sql).pl()
