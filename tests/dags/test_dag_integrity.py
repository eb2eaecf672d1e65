"""Every DAG file imports cleanly and carries what operating it needs."""

from __future__ import annotations

import pytest

from devkit.orchestrate import DAGS_FOLDER


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "extract_channels" in dagbag.dags


def test_every_dag_is_operable(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, dag_id
        assert dag.doc_md, dag_id
        assert dag.schedule is not None, dag_id
        assert dag.start_date is not None and dag.start_date.tzinfo is not None, dag_id
        assert dag.catchup is False, dag_id
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag_id}.{task.task_id}"
            assert task.execution_timeout is not None, f"{dag_id}.{task.task_id}"


def test_extract_updates_one_asset_per_landed_table(dagbag):
    from memberflow.core.contracts import CONTRACTS

    dag = dagbag.dags["extract_channels"]
    outlets = {asset.name for task in dag.tasks for asset in task.outlets}
    assert outlets == {f"landing.{c.channel}.{c.table}" for c in CONTRACTS}
    # per table: extract (to the audit area) >> landing quality gate >> publish (the Asset's outlet)
    assert len(dag.tasks) == 3 * len(CONTRACTS) + 1
    for contract in CONTRACTS:
        name = f"{contract.channel}__{contract.table}"
        assert dag.get_task(name).downstream_task_ids == {f"{name}__gate"}
        assert f"{name}__publish" in dag.get_task(f"{name}__gate").downstream_task_ids
        assert [a.name for a in dag.get_task(f"{name}__publish").outlets] == [f"landing.{contract.name}"]


def test_scoring_follows_the_published_marts_and_announces_scores(dagbag):
    dag = dagbag.dags["score_members"]
    assert [a.name for a in dag.schedule] == ["warehouse.members"]
    publish = dag.get_task("publish")
    assert [a.name for a in publish.outlets] == ["warehouse.member_scores"]
    assert dag.get_task("quality_gate").downstream_task_ids == {"monitor"}
    assert dag.get_task("monitor").downstream_task_ids == {"publish"}
    for model in ("repurchase", "churn", "conversion"):
        assert dag.get_task(f"score_{model}").downstream_task_ids == {"quality_gate"}
    train = dagbag.dags["train_models"]
    assert {t.task_id for t in train.tasks} == {
        *("train_repurchase", "train_churn", "train_conversion"),
        "train_uplift",
    }
    # the segments' uplift models train after the last model, whether or not every model could be trained
    assert train.get_task("train_uplift").trigger_rule == "all_done"


def test_delivery_follows_the_scores_and_a_morning_schedule(dagbag):
    dag = dagbag.dags["deliver_segments"]
    schedule = dag.timetable  # assets or the time of day, whichever comes first
    assert [a.name for a in schedule.asset_condition.objects] == ["warehouse.member_scores"]
    assert (
        schedule.timetable.expression == "30 9 * * *" and str(schedule.timetable.timezone) == "Asia/Shanghai"
    )
    assert dag.get_task("quality_gate").downstream_task_ids == {"deliver"}
    assert [a.name for a in dag.get_task("deliver").outlets] == ["outreach.segment_deliveries"]
    # after the sends: the members' tags into WeCom, and WeCom's send results back into the queues
    assert dag.get_task("deliver").downstream_task_ids == {"sync_tags", "read_back"}
    assert dag.max_active_runs == 1


def test_writers_of_single_writer_stores_run_in_pools_every_deployment_creates(dagbag):
    """A task in a pool no deployment creates is never scheduled, without an error anywhere; a writer of
    the warehouse or the MLflow store outside its one-slot pool could run beside another on a second
    worker."""
    import json

    from memberflow.assets import MLFLOW_POOL, WAREHOUSE_POOL
    from memberflow.core.settings import POOLS_FILE, REPO_ROOT

    defined = json.loads(POOLS_FILE.read_text())
    assert {name: pool["slots"] for name, pool in defined.items()} == {WAREHOUSE_POOL: 1, MLFLOW_POOL: 1}
    writers = {"transform_members": WAREHOUSE_POOL, "score_members": WAREHOUSE_POOL}
    writers |= {"deliver_segments": WAREHOUSE_POOL, "train_models": MLFLOW_POOL}
    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            expected = writers.get(dag_id, "default_pool")
            assert task.pool == expected, f"{dag_id}.{task.task_id} runs in {task.pool}, not {expected}"
    # every way of running the DAGs creates the pools from that file
    assert (
        "pools import /opt/memberflow/docker/airflow-pools.json"
        in (REPO_ROOT / "docker-compose.yml").read_text()
    )
    assert "docker/airflow-pools.json ./docker/airflow-pools.json" in (REPO_ROOT / "Dockerfile").read_text()
    assert "airflow pools import docker/airflow-pools.json" in (REPO_ROOT / "dev").read_text()
