"""deliver_segments executed by Airflow (dag.test) against the sandbox APIs."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest

from devkit.orchestrate import run_dag
from tests.support import SCORE_DAY, TEST_ID_KEY, vault_phones


@pytest.fixture
def dag_env(delivery_ws, broad_segments, sandbox, monkeypatch, airflow_db):
    server = sandbox()
    monkeypatch.setenv("MEMBERFLOW_HOME", str(delivery_ws.home))
    monkeypatch.setenv("MEMBERFLOW_DATA_DIR", str(delivery_ws.data_dir))
    monkeypatch.setenv("MEMBERFLOW_ID_KEY", TEST_ID_KEY)
    monkeypatch.setenv("MEMBERFLOW_CLOCK", "2026-03-02T10:00:00+08:00")
    return delivery_ws, server, airflow_db


def test_the_dag_plans_gates_and_delivers_once(dag_env, capfd):
    settings, server, _ = dag_env
    first = run_dag("deliver_segments", date(2026, 3, 2))
    assert first.ok, first.failed_tasks
    assert set(first.task_states) == {"delivery_date", "build_segments", "quality_gate", "deliver"}
    applied = len(server.state.snapshot()["received"])
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        sends = con.execute(
            "select count(*) from segment_memberships where as_of = ? and status = 'send'", [SCORE_DAY]
        ).fetchall()[0][0]
    assert applied == sends > 100
    # the same logical date again: the plan is rebuilt, nothing new is sent
    again = run_dag("deliver_segments", date(2026, 3, 2))
    assert again.ok and len(server.state.snapshot()["received"]) == applied
    # the task logs of both runs (dag.test() writes them to this process's output) hold no plain phone,
    # though the SMS requests did carry some
    assert server.state.sms_phones
    logs = "".join(capfd.readouterr())
    assert "deliver_segments" in logs and "Done. Returned value was" in logs
    assert not [p for p in vault_phones(settings) if p in logs]


def test_a_failing_segments_gate_stops_delivery(dag_env, tmp_path, monkeypatch):
    _, server, _ = dag_env
    strict = tmp_path / "quality.yml"
    strict.write_text("segments:\n  checks:\n    sending_share: {max_share: 0.01}\n")
    monkeypatch.setenv("MEMBERFLOW_QUALITY_CONFIG", str(strict))
    result = run_dag("deliver_segments", date(2026, 3, 2))
    assert result.task_states["quality_gate"] == "failed"
    assert result.task_states["deliver"] == "upstream_failed"
    assert server.state.snapshot()["requests"] == {"webhook": 0, "wecom": 0, "sms": 0}
