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
from tests.support import build_in_two_steps

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


def test_the_project_builds_on_postgres_and_the_serving_store_gets_duckdbs_marts(
    workspace_copy, built, postgres, tmp_path
):
    """Built from nothing in two steps (``build_in_two_steps``), so the incremental models run on
    PostgreSQL too: the serving store the build fills holds the marts DuckDB builds from the same landing,
    row for row, and the marts gate passes on it."""
    from expectations.marts import gate_warehouse
    from memberflow.serving import serving_tables
    from memberflow.transform import latest_landed_day

    build_in_two_steps(workspace_copy, tmp_path / "held")
    # the identity snapshot the next full build compares with comes from the PostgreSQL marts
    snapshot = pl.read_parquet(workspace_copy.home / "identity" / "assignments.parquet")
    published = read_relation(postgres, f"select count(*) as n from {postgres.schema}.member_identifiers")
    assert snapshot.height == published["n"][0] > 0
    assert_serving_store_matches(workspace_copy, built, serving_tables(), "PostgreSQL")
    assert gate_warehouse(workspace_copy, latest_landed_day(workspace_copy)).ok


def assert_serving_store_matches(settings, built, tables: list[str], target: str) -> None:
    """The serving store a server target fed holds DuckDB's marts (MARTS row for row, the newest day of
    member_features; the rest of the slice the same number of rows)."""
    assert set(MARTS) <= set(tables)
    with (
        duckdb.connect(str(settings.warehouse_path), read_only=True) as served,
        duckdb.connect(str(built.warehouse_path), read_only=True) as con,
    ):
        present = {row[0] for row in served.execute("select table_name from duckdb_tables()").fetchall()}
        assert set(tables) <= present
        for table in MARTS:
            # member_features also keeps the first step's as-of day (retention): compare the newest
            newest = (
                f" where as_of_date = (select max(as_of_date) from {table})"
                if table == "member_features"
                else ""
            )
            expected = _comparable(con.sql(f"select * from {table}" + newest).pl())
            got = _comparable(served.sql(f"select * from {table}" + newest).pl())
            assert got.columns == expected.columns, table
            assert expected.height > 0, table
            try:
                assert_frame_equal(got, expected, check_dtypes=False)
            except AssertionError as exc:
                raise AssertionError(f"{table} differs between {target} and DuckDB: {exc}") from None
        for table in sorted(set(tables) - set(MARTS)):
            count = f"select count(*) from {table}"
            assert served.execute(count).fetchone() == con.execute(count).fetchone(), table


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
