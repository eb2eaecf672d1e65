"""transform_members executed by Airflow: Cosmos runs `dbt build` per project layer, then the marts gate."""

from __future__ import annotations

import json
import shutil
from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from devkit.orchestrate import load_dag, run_dag
from memberflow.core.contracts import get_contract
from memberflow.dbt_env import BUILD_LAYERS
from memberflow.extract import landed_schema, partition_dir
from tests.support import TEST_ID_KEY, make_settings, query

RUN_DAY = date(2026, 3, 2)


@pytest.fixture
def transform_env(tmp_path, monkeypatch, built, airflow_db):
    home = tmp_path / "ws"
    shutil.copytree(built.home, home)
    monkeypatch.setenv("MEMBERFLOW_HOME", str(home))
    monkeypatch.setenv("MEMBERFLOW_DATA_DIR", str(built.data_dir))
    monkeypatch.setenv("MEMBERFLOW_ID_KEY", TEST_ID_KEY)
    settings = make_settings(home, built.data_dir)
    settings.warehouse_path.unlink()
    return settings


def dbt_results(settings) -> dict[str, str]:
    """node -> status of the last dbt task's run_results.json (the workspace's dbt target folder)."""
    results = json.loads((settings.home / "dbt" / "target" / "run_results.json").read_text())["results"]
    return {node["unique_id"]: node["status"] for node in results}


def test_every_layer_builds_in_order_and_the_warehouse_is_published(transform_env):
    from memberflow.transform import BUILT_MANIFEST, _manifest_path

    built_manifest = _manifest_path(transform_env, BUILT_MANIFEST)
    built_manifest.unlink()
    result = run_dag("transform_members", RUN_DAY)
    assert result.ok, result.failed_tasks
    assert result.task_states["publish"] == "success"
    assert result.task_states["quality_gate"] == "success"
    # one `dbt build` task per layer, in dependency order
    layers = [f"dbt.{layer}" for layer in BUILD_LAYERS]
    assert layers == ["dbt.staging", "dbt.identity", "dbt.members"]
    assert {t for t in result.task_states if t.startswith("dbt.")} == set(layers)
    assert {result.task_states[t] for t in layers} == {"success"}
    dag = load_dag("transform_members")
    assert [dag.get_task(t).upstream_task_ids for t in layers] == [
        {"write_build_inputs"},
        {"dbt.staging"},
        {"dbt.identity"},
    ]
    # the last layer built the core marts and ran their tests, a test over two marts included
    members = dbt_results(transform_env)
    assert members["model.memberflow.dim_member"] == "success"
    assert members["model.memberflow.fct_orders"] == "success"
    relationship = "test.memberflow.relationships_fct_orders_member_id__member_id__ref_dim_member_"
    assert [s for n, s in members.items() if n.startswith(relationship)] == ["pass"]
    assert not any(n.startswith("model.memberflow.stg_") for n in members)  # staging was its own task
    assert (transform_env.quality_dir / "published" / "marts.json").exists()
    assert query(transform_env, "select count(*) as n from dim_member")["n"][0] > 1000
    assert built_manifest.exists()  # the next run's event staging adds to what this one built


def test_a_failing_dbt_test_fails_the_run_and_skips_everything_downstream(transform_env):
    # A channel writer bypassed the contract: a consent scope dbt's accepted_values test does not know.
    contract = get_contract("consent", "events")
    folder = partition_dir(transform_env.landing_dir, "consent", "events", RUN_DAY)
    folder.mkdir(parents=True)
    row = {name: None for name in landed_schema(contract).names}
    row.update(
        event_id="bad-1",
        id_type="card_no",
        id_value="C1",
        scope="marketing_calls",
        granted=True,
        event_time=pa.scalar(0, pa.timestamp("us", tz="UTC")).as_py(),
        local_date=RUN_DAY,
        _source_file="x",
        _row_number=1,
        _loaded_at=pa.scalar(0, pa.timestamp("us", tz="UTC")).as_py(),
    )
    pq.write_table(pa.Table.from_pylist([row], schema=landed_schema(contract)), folder / "part-0.parquet")

    result = run_dag("transform_members", RUN_DAY)
    assert not result.ok
    assert result.task_states["dbt.staging"] == "failed"
    assert result.task_states["dbt.identity"] == "upstream_failed"
    assert result.task_states["dbt.members"] == "upstream_failed"
    # dbt names what failed: the scope test of the consent staging model, nothing else
    staged = dbt_results(transform_env)
    failed = [n for n, s in staged.items() if s in ("fail", "error")]
    assert len(failed) == 1 and failed[0].startswith(
        "test.memberflow.accepted_values_stg_consent__events_scope"
    )
    assert result.task_states["publish"] == "upstream_failed"


def test_a_failing_marts_gate_skips_publish_and_leaves_the_marts_unpublished(transform_env):
    from expectations.marts import gate_warehouse
    from memberflow.transform import build_warehouse
    from memberflow.warehouse import published_marker

    # The marts of the last landed day passed their gate ...
    build_warehouse(transform_env)
    last = max(p.name for p in (transform_env.landing_dir / "wecom" / "contacts").glob("dt=*"))
    assert gate_warehouse(transform_env, date.fromisoformat(last[3:])).ok
    snapshot = transform_env.home / "identity" / "assignments.parquet"
    stamp = snapshot.stat().st_mtime_ns
    # ... then two channels' history vanished from landing: dbt builds fine, but members are missing, and
    # the rebuild of that day is compared with its last passing run.
    shutil.rmtree(transform_env.landing_dir / "wecom" / "contacts")
    shutil.rmtree(transform_env.landing_dir / "miniprogram" / "users")

    result = run_dag("transform_members", RUN_DAY)
    assert not result.ok
    assert result.task_states["dbt.members"] == "success"
    assert result.task_states["quality_gate"] == "failed"
    assert result.task_states["publish"] == "upstream_failed"
    assert not published_marker(transform_env, "marts").exists()
    assert snapshot.stat().st_mtime_ns == stamp  # publish wrote nothing
    gate = transform_env.quality_dir / "results" / "marts" / f"dt={last[3:]}" / "_gate.json"
    assert '"status": "failed"' in gate.read_text()
    members = json.loads((gate.parent / "dim_member.json").read_text())
    failed = [f["check"] for f in members["findings"] if not f["success"]]
    assert failed == ["member_count_change"]


def test_on_a_server_target_the_build_is_one_task_and_the_gate_checks_the_serving_store(
    transform_env, monkeypatch
):
    """MEMBERFLOW_DBT_TARGET=postgres: the DAG builds on PostgreSQL (the target's two phases and the replay
    in one task), the serving store gets the marts, and the gate checks and publishes them."""
    import uuid

    from memberflow.core.settings import PgSettings
    from memberflow.postgres import drop_database

    monkeypatch.setenv("MEMBERFLOW_DBT_TARGET", "postgres")
    monkeypatch.setenv("MEMBERFLOW_PG_DATABASE", f"memberflow_test_{uuid.uuid4().hex[:10]}")
    try:
        result = run_dag("transform_members", RUN_DAY)
    finally:
        drop_database(PgSettings.from_env())
    assert result.ok, result.failed_tasks
    assert result.task_states == {"dbt_build": "success", "quality_gate": "success", "publish": "success"}
    assert (transform_env.quality_dir / "published" / "marts.json").exists()
    # the workspace had no DuckDB file: the marts the gate passed came from PostgreSQL
    assert query(transform_env, "select count(*) as n from dim_member")["n"][0] > 1000
