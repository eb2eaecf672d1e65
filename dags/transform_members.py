"""
### transform_members

Builds the member warehouse with dbt (DuckDB) once every landed table has new data: staging over the
landed Parquet (the three event tables incremental: a day's build reads only the new partitions, unless
`write_build_inputs` finds older ones changed and rebuilds them), the One ID graph with stable member ids,
and the member marts (`dim_member`, `member_identifiers`, `member_id_history`, `fct_orders`,
`fct_member_daily_engagement`, ...).

Cosmos renders one Airflow task per dbt model, `dbt build` of the model and then its tests (a test over two
models runs as its own task once both exist): a failing test fails its task and skips everything downstream.
One task per model rather than a model task plus a test task halves the tasks, and with them the ~3 s each
task costs a scheduler to start. DuckDB allows one writer, so the DAG runs one task at a time.
The task graph comes from the parsed project in `$MEMBERFLOW_HOME/dbt/manifest/`; parsing the DAG file
re-creates it (`dbt parse`, a few seconds, once) when it is missing or the project's files changed.
After dbt, `quality_gate` runs the marts quality suites (Great Expectations, `expectations/marts.py`):
one member per `member_id`, one member per identifier, tag and feature vocabularies and ranges, null rates,
and the member count against the last passing day. A critical failure fails the task and skips `publish`.
Only when the gate passes is the marts gate published and the `warehouse.members` Asset updated, so
training, scoring and delivery never start on marts that failed their checks.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task
from cosmos import DbtTaskGroup, ExecutionConfig, ProfileConfig, ProjectConfig, RenderConfig
from cosmos.constants import LoadMode, TestBehavior

from memberflow.assets import LANDED_ASSETS, WAREHOUSE_MEMBERS
from memberflow.core.settings import get_settings, schedule_start
from memberflow.dbt_env import DBT_EXECUTABLE, DBT_PROJECT_DIR, dbt_environment, ensure_manifest

CHINA = "Asia/Shanghai"
SETTINGS = get_settings()
# Rendering from the parsed project keeps parsing fast; it is re-parsed only when the project changed.
MANIFEST = ensure_manifest(SETTINGS)


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
        "retries": 1,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=1),
    },
    tags=["memberflow", "transform", "dbt"],
    doc_md=__doc__,
)
def transform_members() -> None:
    dbt = DbtTaskGroup(
        group_id="dbt",
        project_config=ProjectConfig(
            dbt_project_path=DBT_PROJECT_DIR,
            manifest_path=MANIFEST,
            install_dbt_deps=False,
            env_vars=dbt_environment(SETTINGS),
        ),
        profile_config=ProfileConfig(
            profile_name="memberflow",
            target_name="duckdb",
            profiles_yml_filepath=DBT_PROJECT_DIR / "profiles.yml",
        ),
        execution_config=ExecutionConfig(dbt_executable_path=DBT_EXECUTABLE),
        render_config=RenderConfig(
            load_method=LoadMode.DBT_MANIFEST,
            test_behavior=TestBehavior.BUILD,
            # A relationships test needs both of its models: it runs once both are built.
            should_detach_multiple_parents_tests=True,
            emit_datasets=False,
        ),
    )
    gate = quality_gate()
    write_build_inputs() >> dbt >> gate
    publish(gate)


transform_members()
