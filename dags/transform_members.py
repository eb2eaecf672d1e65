"""
### transform_members

Builds the member warehouse with dbt (DuckDB) once every landed table has new data: staging over the
landed Parquet (the three event tables incremental: a day's build reads only the new partitions, unless
`write_build_inputs` finds older ones changed and rebuilds them), the One ID graph with stable member ids,
and the member marts (`dim_member`, `member_identifiers`, `member_id_history`, `fct_orders`,
`fct_member_daily_engagement`, ...).

dbt runs as three Cosmos `dbt build` tasks, one per layer of the project, in dependency order:
`dbt.staging` (sources to staging views, reference tables), `dbt.identity` (the One ID graph and the
identity marts) and `dbt.members` (orders, activity, tags, features and the core marts). The layers are
the project's selectors (`dbt_project/selectors.yml`). Each task builds its models and runs their tests:
a failing model or test fails the task (dbt's log names it) and everything downstream is skipped. A task
per layer rather than per model (as this DAG had before): on the demo sample the DAG ran in 63-72 s as 40
model tasks and 36-37 s as three layer tasks, in process (`dag.test`), and a scheduler adds seconds of
start-up to every task. DuckDB allows one writer: the DAG runs one task at a time, and each layer holds the
warehouse lock while dbt writes.
After dbt, `quality_gate` runs the marts quality suites (Great Expectations, `expectations/marts.py`):
one member per `member_id`, one member per identifier, tag and feature vocabularies and ranges, null rates,
and the member count against the last passing day. A critical failure fails the task and skips `publish`.
Only when the gate passes is the marts gate published and the `warehouse.members` Asset updated, so
training, scoring and delivery never start on marts that failed their checks.

On a server target (`MEMBERFLOW_DBT_TARGET=postgres` or `spark`, read when the file is parsed) the build is
one task, `dbt_build`: the target's own sequence (load or read the landing, the identity inputs, the
replay, the rest), ending with the copy of the marts into the serving store that the gate then checks.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import TaskGroup, chain, dag, task
from cosmos import ProfileConfig
from cosmos.constants import InvocationMode
from cosmos.operators.local import DbtBuildLocalOperator

from memberflow.assets import LANDED_ASSETS, WAREHOUSE_MEMBERS, WAREHOUSE_POOL
from memberflow.core.settings import get_settings, schedule_start
from memberflow.dbt_env import BUILD_LAYERS, DBT_EXECUTABLE, DBT_PROJECT_DIR, dbt_environment

SETTINGS = get_settings()


class LayerBuild(DbtBuildLocalOperator):
    """`dbt build --selector <layer>`, holding the warehouse's single-writer lock while dbt writes: the
    ops API, scoring and delivery wait for the layer instead of meeting DuckDB's own file lock."""

    def execute(self, context):
        from memberflow.warehouse import warehouse_lock

        with warehouse_lock(get_settings()):
            return super().execute(context)


@task
def write_build_inputs() -> str:
    """Schema files of landed tables and blocked identifiers (as tokens) for dbt to read."""
    from memberflow.core.settings import apply_privacy_defaults
    from memberflow.transform import write_build_inputs as write
    from memberflow.warehouse import clear_published

    apply_privacy_defaults()
    clear_published(get_settings(), "marts")  # the build is about to change them
    write(get_settings())
    return str(get_settings().home)


@task
def dbt_build() -> int:
    """The whole build on the server target (memberflow.transform.build_warehouse): dbt with its tests, the
    identity replay between its phases, then the serving copy. A failing model or test fails the task."""
    from airflow.sdk.exceptions import AirflowFailException

    from memberflow.core.settings import apply_privacy_defaults
    from memberflow.transform import DbtError, build_warehouse

    apply_privacy_defaults()
    try:
        return build_warehouse(get_settings(), snapshot=False).succeeded
    except DbtError as exc:
        raise AirflowFailException(str(exc)) from exc


@task
def quality_gate() -> dict:
    """Validate the marts dbt built, as of the newest landed day; a critical failure fails the task."""
    from airflow.sdk.exceptions import AirflowFailException

    from expectations.runner import QualityGateError
    from memberflow.core.settings import apply_privacy_defaults
    from memberflow.pipeline import NothingLandedError, gate_marts

    apply_privacy_defaults()
    try:
        result = gate_marts(get_settings())
    except (QualityGateError, NothingLandedError) as exc:
        raise AirflowFailException(str(exc)) from exc
    return {"date": result.date, "status": result.status, "warnings": result.messages("warning")}


@task(outlets=[WAREHOUSE_MEMBERS])
def publish(gate: dict, **context) -> str:
    """Models, tests and the marts gate passed: keep the identity snapshot (split detection), announce it."""
    from memberflow.transform import save_identity_snapshot

    save_identity_snapshot(get_settings())
    context["outlet_events"][WAREHOUSE_MEMBERS].extra = {"dt": gate["date"], "quality": gate["status"]}
    return str(get_settings().warehouse_path)


@dag(
    dag_id="transform_members",
    schedule=list(LANDED_ASSETS),
    start_date=schedule_start(),
    catchup=False,
    max_active_runs=1,
    max_active_tasks=1,
    default_args={
        "owner": "data-engineering",
        "pool": WAREHOUSE_POOL,  # one writer at a time, across workers (memberflow/assets.py)
        "retries": 1,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=1),
    },
    tags=["memberflow", "transform", "dbt"],
    doc_md=__doc__,
)
def transform_members() -> None:
    if SETTINGS.dbt_target != "duckdb":
        gate = quality_gate()
        dbt_build() >> gate
        publish(gate)
        return
    profile = ProfileConfig(
        profile_name="memberflow",
        target_name="duckdb",
        profiles_yml_filepath=DBT_PROJECT_DIR / "profiles.yml",
    )
    with TaskGroup("dbt", tooltip="dbt build, one task per layer of the project") as dbt:
        chain(
            *(
                LayerBuild(
                    task_id=layer,
                    project_dir=DBT_PROJECT_DIR,
                    profile_config=profile,
                    selector=layer,
                    env=dbt_environment(SETTINGS),
                    append_env=True,
                    dbt_executable_path=str(DBT_EXECUTABLE),
                    # a child process keeps dbt's global state and its DuckDB connection out of the task
                    invocation_mode=InvocationMode.SUBPROCESS,
                    install_deps=False,
                    emit_datasets=False,
                )
                for layer in BUILD_LAYERS
            )
        )
    gate = quality_gate()
    write_build_inputs() >> dbt >> gate
    publish(gate)


transform_members()
