"""The dbt project on Apache Spark (local mode, dbt-spark's session method): it builds with all its tests,
and every mart it builds is the one DuckDB builds from the same landing zone, row for row."""

from __future__ import annotations

import shutil
from datetime import date

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from memberflow import spark
from tests.dbt.test_postgres import MARTS, _comparable
from tests.support import bring_back, hold_back


@pytest.fixture
def spark_target(monkeypatch) -> spark.SparkSettings:
    """Spark as the dbt target for this test; its warehouse and metastore live in the workspace."""
    monkeypatch.setenv("MEMBERFLOW_DBT_TARGET", "spark")
    monkeypatch.setenv("MEMBERFLOW_SPARK_SCHEMA", "memberflow")
    return spark.SparkSettings.from_env()


IDENTITY_QUERIES = {
    "nodes": "select id_type, id_value, first_seen_on from {s}.int_identity_nodes",
    "edges": (
        "select id_type_a, id_value_a, id_type_b, id_value_b, first_seen_on"
        " from {s}.int_identity_edges_checked where drop_reason is null"
    ),
    "replay": "select * from {s}_raw.identity_replay",
}


def _same_records(got: pl.DataFrame, want: pl.DataFrame, what: str) -> None:
    want = want.select(got.columns).cast(dict(got.schema))
    try:
        assert_frame_equal(got.sort(got.columns, nulls_last=True), want.sort(got.columns, nulls_last=True))
    except AssertionError as exc:
        raise AssertionError(f"Spark's replay differs from resolution_records ({what}): {exc}") from None


def test_the_project_builds_on_spark_and_its_marts_match_duckdb(
    workspace_copy, built, spark_target, tmp_path
):
    """Built in two steps, so the incremental models run on Spark too: first without every table's last
    five days, then with them (a build that adds their partitions and recomputes the engagement of the
    members they touch, identity changes included). Spark's identity replay (per group of connected
    components) gives what memberflow.identity.resolution_records gives over the whole graph: for this
    build (no earlier snapshot), and again against a perturbed earlier snapshot (splits, merged members)."""
    from memberflow.identity import resolution_records
    from memberflow.transform import build_warehouse, plan_incremental_build

    shutil.rmtree(workspace_copy.home / "identity")  # as the DuckDB build had it: no earlier snapshot
    held = hold_back(workspace_copy, tmp_path / "held", lambda days: days[-5:])
    build_warehouse(workspace_copy, snapshot=False)
    bring_back(held)
    assert set(plan_incremental_build(workspace_copy).values()) == {None}
    result = build_warehouse(workspace_copy)  # raises on any failed model, unit test or data test

    assert result.succeeded >= 80
    schema = spark_target.schema
    queries = {}
    for table in MARTS:
        # member_features also keeps the first step's as-of day (retention): compare the newest
        newest = (
            f" where as_of_date = (select max(as_of_date) from {schema}.{table})"
            if table == "member_features"
            else ""
        )
        queries[table] = f"select * from {schema}.{table}" + newest
    queries["identifier_count"] = f"select count(*) as n from {schema}.member_identifiers"
    queries |= {name: sql.format(s=schema) for name, sql in IDENTITY_QUERIES.items()}
    exported = spark.export(workspace_copy, queries, tmp_path / "spark_marts")
    # the identity snapshot the next full build compares with comes from the Spark marts
    snapshot = pl.read_parquet(workspace_copy.home / "identity" / "assignments.parquet")
    assert snapshot.height == pl.read_parquet(exported["identifier_count"])["n"][0] > 0
    with duckdb.connect(str(built.warehouse_path), read_only=True) as con:
        for table in MARTS:
            newest = (
                f" where as_of_date = (select max(as_of_date) from {table})"
                if table == "member_features"
                else ""
            )
            expected = _comparable(con.sql(f"select * from {table}" + newest).pl())
            got = pl.read_parquet(exported[table])
            assert got.columns == expected.columns, table
            assert expected.height > 0, table
            try:
                assert_frame_equal(_comparable(got), expected, check_dtypes=False)
            except AssertionError as exc:
                raise AssertionError(f"{table} differs between Spark and DuckDB: {exc}") from None

    nodes, edges = pl.read_parquet(exported["nodes"]), pl.read_parquet(exported["edges"])
    # the second build replayed with no snapshot (the first one saved none)
    whole = resolution_records(nodes, edges, tmp_path / "no_snapshot", None)
    _same_records(pl.read_parquet(exported["replay"]), whole, "this build")
    assert set(whole["record"]) == {"assignment", "merge"}

    # an earlier snapshot in which some identifiers sat in other members (splits now), some in a member
    # since merged away (no split), with splits recorded before (kept, the earliest first)
    assignments = whole.filter(pl.col("record") == "assignment").select("id_type", "id_value", "member_id")
    retired = whole.filter(pl.col("record") == "merge")["retired_member_id"][0]
    index = pl.int_range(pl.len())
    earlier = workspace_copy.home / "identity"
    assignments.with_columns(
        member_id=pl.when(index % 97 == 0)
        .then(pl.lit("m_earlier_") + (index % 3).cast(pl.String))
        .when(index % 89 == 0)
        .then(pl.lit(retired))
        .otherwise("member_id")
    ).write_parquet(earlier / "assignments.parquet")
    pl.DataFrame(
        {
            "member_id": ["m_a", "m_b", "m_a"],
            "split_from_member_id": ["m_x", "m_y", "m_x"],
            "split_on": [date(2026, 1, 5), date(2026, 1, 6), date(2026, 1, 7)],
        }
    ).write_parquet(earlier / "splits.parquet")
    replayed = spark.replay(workspace_copy, None, {"replay": queries["replay"]}, tmp_path / "replay")
    perturbed = resolution_records(nodes, edges, earlier, None)
    assert perturbed.filter(pl.col("record") == "split").height > 3
    _same_records(pl.read_parquet(replayed["replay"]), perturbed, "perturbed snapshot")


def test_bad_spark_settings_stop_with_a_clear_message(monkeypatch):
    with pytest.raises(spark.SparkSettingsError, match="MEMBERFLOW_SPARK_SCHEMA"):
        spark.SparkSettings.from_env({"MEMBERFLOW_SPARK_SCHEMA": "no-dashes"})
    with pytest.raises(spark.SparkSettingsError, match="MEMBERFLOW_SPARK_REPLAY_GROUPS"):
        spark.SparkSettings.from_env({"MEMBERFLOW_SPARK_REPLAY_GROUPS": "0"})
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(spark.SparkSettingsError, match="needs Java"):
        spark.check_java()
