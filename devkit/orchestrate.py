"""Run the project's DAGs through Airflow on one machine (demo, CLI, tests).

Airflow reads its configuration from the environment when it is first imported, so ``airflow_environment``
must be applied before anything imports airflow. The embedded default is a SQLite metadata database under
``$MEMBERFLOW_HOME/airflow``; DAGs run with ``dag.test()``, which executes every task for real in this
process, one logical date at a time.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time

from memberflow.core.contracts import LOCAL_TZ
from memberflow.core.settings import DAGS_FOLDER, POOLS_FILE, PRIVACY_DEFAULTS, Settings


def airflow_environment(settings: Settings) -> dict[str, str]:
    """Variables that point Airflow at the workspace; values already set in the environment win."""
    home = settings.airflow_home
    env = {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "MEMBERFLOW_HOME": str(settings.home),
        "MEMBERFLOW_DATA_DIR": str(settings.data_dir),
        **PRIVACY_DEFAULTS,
    }
    return {
        k: os.environ.get(k, v) if k not in ("MEMBERFLOW_HOME", "MEMBERFLOW_DATA_DIR") else v
        for k, v in env.items()
    }


def apply_airflow_environment(settings: Settings) -> dict[str, str]:
    """Point this process's (future) Airflow import at the workspace."""
    env = airflow_environment(settings)
    if "airflow" in sys.modules and os.environ.get("AIRFLOW_HOME") != env["AIRFLOW_HOME"]:
        raise RuntimeError("airflow was imported before the workspace's Airflow environment was applied")
    os.environ.update(env)
    return env


def prepare_airflow(settings: Settings) -> None:
    """Point this process at the workspace's Airflow, create its metadata database once, and its pools
    whenever ``docker/airflow-pools.json`` changed."""
    env = apply_airflow_environment(settings)
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    marker = settings.airflow_home / ".migrated"
    if not marker.exists():
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
            text=True,
        )
        marker.write_text("ok\n")
    pools = settings.airflow_home / ".pools.json"
    if not pools.exists() or pools.read_text() != POOLS_FILE.read_text():
        import_pools([sys.executable, "-m", "airflow"], {**os.environ, **env})
        pools.write_text(POOLS_FILE.read_text())


def import_pools(airflow: list[str], env: dict[str, str]) -> None:
    """Create or update the pools the DAGs' writer tasks run in (a task in a missing pool never starts)."""
    done = subprocess.run(
        [*airflow, "pools", "import", str(POOLS_FILE)], env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(
            f"airflow pools import {POOLS_FILE} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )


def logical_date_for(day: date) -> datetime:
    """The logical date of the daily run that covers local day ``day``."""
    return datetime.combine(day, time(), LOCAL_TZ)


@dataclass
class DagRunResult:
    dag_id: str
    day: date
    state: str
    failed_tasks: list[str]
    task_states: dict[str, str]

    @property
    def ok(self) -> bool:
        return self.state == "success"


def task_count(dag_id: str) -> int:
    return len(load_dag(dag_id).tasks)


def load_dag(dag_id: str):
    """Parse the DAG's own file (named after the DAG, as every file in dags/ is)."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS_FOLDER / f"{dag_id}.py"))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    return bag.get_dag(dag_id)


def run_dag(
    dag_id: str,
    day: date,
    retries: int | None = 0,
    on_task: Callable[[str], None] | None = None,
    conf: dict | None = None,
) -> DagRunResult:
    """Execute one daily run of ``dag_id`` for ``day`` with ``dag.test()`` (tasks run for real).

    ``dag.test()`` waits out each retry delay in-process; interactive runs fail fast (``retries=0``) and
    leave retrying to the scheduler. Pass ``retries=None`` to keep the DAG's own setting. ``on_task`` is
    called with each task's id as the task starts (the demo's progress display). ``conf``: the run's
    parameters (e.g. ``{"days": 60}`` lands 60 days of history in one extract_channels run).
    """
    dag = load_dag(dag_id)
    for task in dag.tasks:
        if retries is not None:
            task.retries = retries
        if on_task is not None:
            existing = task.on_execute_callback or []
            existing = existing if isinstance(existing, list) else [existing]
            task.on_execute_callback = [lambda context, tid=task.task_id: on_task(tid), *existing]
    run = dag.test(logical_date=logical_date_for(day), run_conf=conf)
    states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    failed = sorted(task for task, state in states.items() if state not in ("success", "skipped"))
    return DagRunResult(dag_id, day, str(run.state), failed, states)
