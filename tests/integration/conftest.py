"""The integration tier's stack: a workspace with 60 days of history loaded, the outreach sandbox, an MLflow
server with authentication and Airflow's four components with two Celery workers, on the local PostgreSQL
server and Redis.

Environment: ``MEMBERFLOW_IT_POSTGRES`` (default ``postgresql://postgres@127.0.0.1:5432``, a role that may
create databases) and ``MEMBERFLOW_IT_REDIS`` (default ``redis://127.0.0.1:6379/0``, Celery's broker).
Without a reachable server the tier fails with that message; deselect it with ``-m "not integration"``.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

import pytest

from memberflow.core.contracts import LOCAL_TZ
from memberflow.core.settings import PRIVACY_DEFAULTS
from tests.integration.airflow_api import AirflowAPI
from tests.integration.stack import (
    CLOCK,
    DAG_IDS,
    DAYS,
    HISTORY_END,
    HISTORY_START,
    MEMBERS,
    PG_DSN,
    REDIS_URL,
    Stack,
)
from tests.support import TEST_ID_KEY, make_settings


def _postgres_reachable() -> None:
    import psycopg2

    try:
        psycopg2.connect(f"{PG_DSN}/postgres", connect_timeout=5).close()
    except psycopg2.OperationalError as exc:
        pytest.fail(
            f"the integration tier needs PostgreSQL at {PG_DSN} (MEMBERFLOW_IT_POSTGRES): {exc}; "
            'deselect it with -m "not integration"'
        )


def _redis_reachable() -> None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5).ping()
    except redis.RedisError as exc:
        pytest.fail(
            f"the integration tier's Celery workers need Redis at {REDIS_URL} (MEMBERFLOW_IT_REDIS): {exc}; "
            'deselect it with -m "not integration"'
        )


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Sample data through the last test day; the days before the first test day landed, built and gated
    (what `memberflow build --as-of` does for a first load)."""
    from devkit.generate import GenerateConfig, generate
    from expectations.marts import gate_warehouse
    from tests.support import land_and_build

    root = tmp_path_factory.mktemp("production")
    data = root / "sources"
    days = (DAYS[-1] - HISTORY_START).days + 1
    generate(GenerateConfig(MEMBERS, HISTORY_START, days, 5, data), TEST_ID_KEY.encode())
    settings = make_settings(root / "workspace", data)
    land_and_build(settings, data, HISTORY_END)
    assert gate_warehouse(settings, HISTORY_END).ok
    return root, settings


@pytest.fixture(scope="module")
def production(history):
    """Everything running; stopped (by pid) and its databases dropped when the module ends."""
    from devkit.sandbox import SandboxServer
    from ml.config import SHORT_HISTORY

    _postgres_reachable()
    _redis_reachable()
    root, settings = history
    sandbox = SandboxServer()
    sandbox.start()
    # go-live is tomorrow (China time): the scheduler creates no daily run of its own during the test, and
    # the days before go-live are run as backfills, as an operator would
    go_live = (datetime.now(LOCAL_TZ) + timedelta(days=1)).date()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MEMBERFLOW", "MLFLOW"))}
    base.update(PRIVACY_DEFAULTS)
    base.update(
        {
            "MEMBERFLOW_HOME": str(settings.home),
            "MEMBERFLOW_DATA_DIR": str(settings.data_dir),
            "MEMBERFLOW_ID_KEY": TEST_ID_KEY,
            "MEMBERFLOW_START_DATE": go_live.isoformat(),
            "MEMBERFLOW_MODELS_CONFIG": str(SHORT_HISTORY),  # 60 days of history: 14-day horizons
            "MEMBERFLOW_CLOCK": CLOCK,
            **sandbox.env(),
        }
    )
    stack = Stack(root / "stack", base)
    try:
        mlflow_env = stack.start_mlflow()
        stack.start_airflow(mlflow_env)
        api = AirflowAPI(stack.airflow_url, "admin", stack.airflow_password)
        api.wait_for_dags(DAG_IDS)
        yield stack, api, settings, sandbox, mlflow_env
    finally:
        stack.stop()
        sandbox.stop()
