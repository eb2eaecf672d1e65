"""The dbt project on Apache Spark (local mode, dbt-spark's session method): it builds with all its tests,
and every mart it builds is the one DuckDB builds from the same landing zone, row for row."""

from __future__ import annotations

import shutil
from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from memberflow import spark
from tests.dbt.test_postgres import assert_serving_store_matches
from tests.support import build_in_two_steps, make_settings


@pytest.fixture(scope="module")
def spark_ws(tmp_path_factory, built):
    """The built sample's landing built again with Spark as the dbt target (``build_in_two_steps``): what
    its serving store holds afterwards came from Spark."""
    root = tmp_path_factory.mktemp("spark")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MEMBERFLOW_DBT_TARGET", "spark")
        env.setenv("MEMBERFLOW_SPARK_SCHEMA", "memberflow")
        shutil.copytree(built.home, root / "ws")
        shutil.copytree(built.data_dir, root / "data")
        settings = make_settings(root / "ws", root / "data")
        build_in_two_steps(settings, root / "held")
        yield settings


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


def test_the_project_builds_on_spark_and_the_serving_store_gets_duckdbs_marts(spark_ws, built, tmp_path):
    """Every model, unit test and data test passes on Spark (the fixture's build raises otherwise); the
    serving store, which every stage after dbt reads, then holds the marts DuckDB builds from the same
    landing, row for row. Spark's identity replay (per group of connected components) gives what
    memberflow.identity.resolution_records gives over the whole graph: for this build (no earlier
    snapshot), and again against a perturbed earlier snapshot (splits, merged members)."""
    from memberflow.identity import resolution_records
    from memberflow.serving import serving_tables

    schema = "memberflow"
    assert_serving_store_matches(spark_ws, built, serving_tables(), "Spark")

    queries = {"identifier_count": f"select count(*) as n from {schema}.member_identifiers"}
    queries |= {name: sql.format(s=schema) for name, sql in IDENTITY_QUERIES.items()}
    exported = spark.export(spark_ws, queries, tmp_path / "spark_marts")
    # the identity snapshot the next full build compares with comes from the Spark marts
    snapshot = pl.read_parquet(spark_ws.home / "identity" / "assignments.parquet")
    assert snapshot.height == pl.read_parquet(exported["identifier_count"])["n"][0] > 0

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
    earlier = spark_ws.home / "identity"  # where the replay reads the snapshot (the build's is kept aside)
    shutil.copytree(earlier, tmp_path / "kept")
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
    replayed = spark.replay(spark_ws, None, {"replay": queries["replay"]}, tmp_path / "replay")
    perturbed = resolution_records(nodes, edges, earlier, None)
    shutil.rmtree(earlier)
    shutil.copytree(tmp_path / "kept", earlier)
    assert perturbed.filter(pl.col("record") == "split").height > 3
    _same_records(pl.read_parquet(replayed["replay"]), perturbed, "perturbed snapshot")


def test_after_a_spark_build_the_stages_run_and_spark_scoring_equals_single_machine_scoring(spark_ws):
    """The marts gate passes on the serving store a Spark build fed; a model trains from it (its cutoffs'
    member_features computed on Spark and copied over); the champion scores its population on Spark's
    executors, and every member's probability is the single-machine scorer's to 1e-9, in the same decile,
    with decile 10 the likeliest tenth."""
    from expectations.marts import gate_warehouse
    from memberflow.transform import latest_landed_day
    from memberflow.warehouse import read_warehouse
    from ml.datasets import population_frame
    from ml.evaluate import Calibration
    from ml.registry import load
    from ml.score import score, score_frame
    from ml.train import train
    from tests.support import CUTOFFS, HORIZON, SCORE_DAY

    gate = gate_warehouse(spark_ws, latest_landed_day(spark_ws))
    assert gate.ok, gate.explain()
    assert train(spark_ws, "repurchase", CUTOFFS, HORIZON).decision.promote
    result = score(spark_ws, "repurchase", SCORE_DAY)
    assert result.partitions >= 2  # scored by more than one task

    loaded = load(spark_ws, "repurchase")
    with read_warehouse(spark_ws) as con:
        on_spark = con.sql(
            "select member_id, probability, decile from member_scores where model = 'repurchase' "
            "and as_of = ? order by member_id",
            params=[SCORE_DAY],
        ).pl()
        frame = population_frame(con, "repurchase", [SCORE_DAY])
    single = pl.from_arrow(
        score_frame(
            loaded.booster,
            loaded.features,
            Calibration.from_dict(loaded.calibration),
            frame,
            "repurchase",
            SCORE_DAY,
            loaded.ref.version,
        ).select(["member_id", "probability", "decile"])
    ).sort("member_id")
    assert on_spark.height == single.height == result.rows > 300
    assert on_spark["member_id"].to_list() == single["member_id"].to_list()
    assert (on_spark["probability"] - single["probability"]).abs().max() <= 1e-9
    assert on_spark["decile"].to_list() == single["decile"].to_list()
    by_decile = on_spark.group_by("decile").agg(pl.col("probability").mean()).sort("decile")
    assert by_decile["decile"].to_list() == list(range(1, 11))
    assert by_decile["probability"][-1] > by_decile["probability"][0]
    assert on_spark["probability"].n_unique() > 50


def test_bad_spark_settings_stop_with_a_clear_message(monkeypatch):
    with pytest.raises(spark.SparkSettingsError, match="MEMBERFLOW_SPARK_SCHEMA"):
        spark.SparkSettings.from_env({"MEMBERFLOW_SPARK_SCHEMA": "no-dashes"})
    with pytest.raises(spark.SparkSettingsError, match="MEMBERFLOW_SPARK_REPLAY_GROUPS"):
        spark.SparkSettings.from_env({"MEMBERFLOW_SPARK_REPLAY_GROUPS": "0"})
    with pytest.raises(spark.SparkSettingsError, match="MEMBERFLOW_SPARK_DRIVER_MEMORY"):
        spark.SparkSettings.from_env({"MEMBERFLOW_SPARK_DRIVER_MEMORY": "4 GB"})
    assert spark.SparkSettings.from_env({"MEMBERFLOW_SPARK_DRIVER_MEMORY": "6g"}).driver_memory == "6g"
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(spark.SparkSettingsError, match="needs Java"):
        spark.check_java()
