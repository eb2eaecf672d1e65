"""Helpers of the dbt tier (the built warehouse fixtures live in tests/conftest.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from datetime import date
from pathlib import Path

import duckdb
import polars as pl

from memberflow.core.contracts import CONTRACTS
from memberflow.extract import partition_days
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


def hold_back(settings, away: Path, pick: Callable[[list[date]], list[date]]) -> list[tuple[Path, Path]]:
    """Move the partitions ``pick`` chooses from each table's landed days out of the landing zone (as if
    they had not arrived yet); returns (folder, where it went) pairs for ``bring_back``."""
    held = []
    for contract in CONTRACTS:
        partitions = partition_days(settings.landing_dir / contract.channel / contract.table)
        for day in pick(sorted(partitions)):
            folder = partitions[day]
            held.append((folder, away / contract.channel / contract.table / folder.name))
            held[-1][1].parent.mkdir(parents=True, exist_ok=True)
            shutil.move(folder, held[-1][1])
    return held


def bring_back(held: list[tuple[Path, Path]]) -> None:
    for folder, away in held:
        shutil.move(away, folder)
