"""The dbt project on PostgreSQL (the local server): it builds with all its tests, and every mart it builds is
the one DuckDB builds from the same landing zone, row for row."""

from __future__ import annotations

import shutil
import uuid

import duckdb
import polars as pl
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

from memberflow.core.contracts import CONTRACTS
from memberflow.core.settings import PgSettings
from memberflow.extract import partition_days
from memberflow.postgres import drop_database, load_landing, read_relation
from memberflow.transform import build_warehouse
from tests.support import bring_back, hold_back

MARTS = [
    "member_identifiers",
    "member_id_history",
    "identity_candidate_links",
    "identity_dropped_edges",
    "dim_member",
    "fct_orders",
    "fct_member_daily_engagement",
    "member_tags",
    "member_features",
    "report_checkin_camps",
    "report_checkin_daily",
    "report_livestream_sessions",
    "report_first_order_conversion",
    "report_repurchase_by_category",
    "report_lifecycle_migration",
    "report_channel_economics",
]


@pytest.fixture
def postgres(monkeypatch) -> PgSettings:
    """A fresh database on the local server, the dbt target for this test, dropped afterwards."""
    name = f"memberflow_test_{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("MEMBERFLOW_DBT_TARGET", "postgres")
    monkeypatch.setenv("MEMBERFLOW_PG_DATABASE", name)
    pg = PgSettings.from_env()
    yield pg
    drop_database(pg)


def _comparable(frame: pl.DataFrame) -> pl.DataFrame:
    """One spelling per value: numbers as rounded floats or int64, timestamps in naive UTC; rows sorted."""
    columns = []
    for name, dtype in frame.schema.items():
        column = pl.col(name)
        if dtype.is_float() or dtype.is_decimal():
            column = column.cast(pl.Float64).round(6)
        elif dtype.is_integer():
            column = column.cast(pl.Int64)
        elif isinstance(dtype, pl.Datetime) and dtype.time_zone:
            column = column.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        columns.append(column.alias(name))
    frame = frame.select(columns)
    return frame.sort(frame.columns, nulls_last=True)


def test_the_project_builds_on_postgres_and_its_marts_match_duckdb(workspace_copy, built, postgres, tmp_path):
    """Built in two steps, so the incremental models run on PostgreSQL too: first without every table's
    last five days, then with them (a build that adds their partitions and recomputes the engagement of
    the members they touch, identity changes included)."""
    from memberflow.transform import plan_incremental_build

    shutil.rmtree(workspace_copy.home / "identity")  # as the DuckDB build had it: no earlier snapshot
    held = hold_back(workspace_copy, tmp_path / "held", lambda days: days[-5:])
    build_warehouse(workspace_copy, snapshot=False)
    bring_back(held)
    assert set(plan_incremental_build(workspace_copy).values()) == {None}
    result = build_warehouse(workspace_copy)  # raises on any failed model, unit test or data test

    assert result.succeeded >= 80
    # the identity snapshot the next full build compares with comes from the PostgreSQL marts
    snapshot = pl.read_parquet(workspace_copy.home / "identity" / "assignments.parquet")
    published = read_relation(postgres, f"select count(*) as n from {postgres.schema}.member_identifiers")
    assert snapshot.height == published["n"][0] > 0
    with duckdb.connect(str(built.warehouse_path), read_only=True) as con:
        for table in MARTS:
            # member_features also keeps the first step's as-of day (retention): compare the newest
            newest = (
                f" where as_of_date = (select max(as_of_date) from {{s}}{table})"
                if table == "member_features"
                else ""
            )
            expected = _comparable(con.sql(f"select * from {table}" + newest.format(s="")).pl())
            got = read_relation(
                postgres, f"select * from {postgres.schema}.{table}" + newest.format(s=f"{postgres.schema}.")
            )
            assert got.columns == expected.columns, table
            assert expected.height > 0, table
            try:
                assert_frame_equal(_comparable(got), expected, check_dtypes=False)
            except AssertionError as exc:
                raise AssertionError(f"{table} differs between PostgreSQL and DuckDB: {exc}") from None


def test_landing_loads_only_new_or_relanded_partitions_and_drops_withdrawn_ones(workspace_copy, postgres):
    settings = workspace_copy
    first = load_landing(settings, postgres)
    landed = {
        f"{c.channel}__{c.table}": sum(
            pq.read_metadata(folder / "part-0.parquet").num_rows
            for folder in partition_days(settings.landing_dir / c.channel / c.table).values()
        )
        for c in CONTRACTS
    }
    assert first.copied > 0 and first.rows == sum(landed.values())

    again = load_landing(settings, postgres)
    assert (again.copied, again.removed, again.unchanged) == (0, 0, first.copied)

    events = settings.landing_dir / "wecom" / "group_events"
    days = partition_days(events)
    withdrawn, *_, relanded = days
    table = pq.read_table(days[relanded] / "part-0.parquet")
    pq.write_table(table, days[relanded] / "part-0.parquet")  # the same rows landed again
    withdrawn_rows = pq.read_metadata(days[withdrawn] / "part-0.parquet").num_rows
    shutil.rmtree(days[withdrawn])

    third = load_landing(settings, postgres)
    assert (third.copied, third.removed, third.rows) == (1, 1, table.num_rows)
    counts = read_relation(
        postgres,
        f"select _partition_dt, count(*) as n from {postgres.raw_schema}.wecom__group_events group by 1",
    )
    per_day = dict(zip(counts["_partition_dt"], counts["n"], strict=True))
    assert withdrawn not in per_day
    assert per_day[relanded] == table.num_rows  # replaced, not appended
    assert sum(per_day.values()) == landed["wecom__group_events"] - withdrawn_rows
