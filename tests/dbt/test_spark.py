"""The dbt project on Apache Spark (local mode, dbt-spark's session method): it builds with all its tests,
and every mart it builds is the one DuckDB builds from the same landing zone, row for row."""

from __future__ import annotations

import shutil

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


def test_the_project_builds_on_spark_and_its_marts_match_duckdb(
    workspace_copy, built, spark_target, tmp_path
):
    """Built in two steps, so the incremental models run on Spark too: first without every table's last
    five days, then with them (a build that adds their partitions and recomputes the engagement of the
    members they touch, identity changes included)."""
    from memberflow.transform import build_warehouse, plan_incremental_build

    shutil.rmtree(workspace_copy.home / "identity")  # as the DuckDB build had it: no earlier snapshot
    held = hold_back(workspace_copy, tmp_path / "held", lambda days: days[-5:])
    build_warehouse(workspace_copy, snapshot=False)
    bring_back(held)
    assert set(plan_incremental_build(workspace_copy).values()) == {None}
    result = build_warehouse(workspace_copy)  # raises on any failed model, unit test or data test

    assert result.succeeded >= 80
    queries = {}
    for table in MARTS:
        # member_features also keeps the first step's as-of day (retention): compare the newest
        newest = (
            f" where as_of_date = (select max(as_of_date) from {{s}}{table})"
            if table == "member_features"
            else ""
        )
        queries[table] = f"select * from {spark_target.schema}.{table}" + newest.format(
            s=f"{spark_target.schema}."
        )
    queries["identifier_count"] = f"select count(*) as n from {spark_target.schema}.member_identifiers"
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


def test_bad_spark_settings_stop_with_a_clear_message(monkeypatch):
    with pytest.raises(spark.SparkSettingsError, match="MEMBERFLOW_SPARK_SCHEMA"):
        spark.SparkSettings.from_env({"MEMBERFLOW_SPARK_SCHEMA": "no-dashes"})
    with pytest.raises(spark.SparkSettingsError, match="MEMBERFLOW_SPARK_REPLAY_GROUPS"):
        spark.SparkSettings.from_env({"MEMBERFLOW_SPARK_REPLAY_GROUPS": "0"})
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(spark.SparkSettingsError, match="needs Java"):
        spark.check_java()
