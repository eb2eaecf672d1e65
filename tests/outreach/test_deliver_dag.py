"""deliver_segments executed by Airflow (dag.test) against the sandbox APIs."""

from __future__ import annotations

from datetime import date

import duckdb
import pytest

from devkit.orchestrate import run_dag
from tests.outreach.test_tags import expected_tags
from tests.support import SCORE_DAY, TEST_ID_KEY, vault_phones


@pytest.fixture
def dag_env(delivery_ws, broad_segments, quick_wecom, sandbox, monkeypatch, airflow_db):
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
    assert set(first.task_states) == {
        "delivery_date",
        "land_consent",
        "build_segments",
        "quality_gate",
        "deliver",
        "sync_tags",
        "read_back",
    }
    applied = len(server.state.snapshot()["received"])
    tagged = server.state.snapshot()["mark_tag_calls"]
    assert tagged > 500 and server.state.tags_of_contacts() == expected_tags(settings)
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        sends = con.execute(
            "select count(*) from segment_memberships where as_of = ? and status = 'send'", [SCORE_DAY]
        ).fetchall()[0][0]
    assert applied == sends > 100
    # the same logical date again: the plan is rebuilt, nothing new is sent
    again = run_dag("deliver_segments", date(2026, 3, 2))
    assert again.ok and len(server.state.snapshot()["received"]) == applied
    assert server.state.snapshot()["mark_tag_calls"] == tagged  # and no tag is set again
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
    assert result.task_states["sync_tags"] == result.task_states["read_back"] == "upstream_failed"
    assert server.state.snapshot()["requests"] == {"webhook": 0, "wecom": 0, "sms": 0}


def test_an_opt_out_given_on_the_delivery_morning_is_landed_first_and_honoured(
    dag_env, tmp_path, monkeypatch
):
    """A member about to be messaged replies "TD" with their store card at 08:00 on the delivery day: the
    file is in the day's consent partition, which no extract has landed yet. The DAG lands it before
    planning, and the member is not sent to."""
    import json
    import shutil

    from memberflow.outreach.run import plan
    from tests.support import MORNING, make_settings

    settings, server, _ = dag_env
    data = tmp_path / "data"
    shutil.copytree(settings.data_dir, data)
    monkeypatch.setenv("MEMBERFLOW_DATA_DIR", str(data))
    ws = make_settings(settings.home, data)
    planned = plan(ws, SCORE_DAY, MORNING).frame
    sending = set(planned.filter(planned["status"] == "send")["member_id"].to_list())
    with duckdb.connect(str(ws.warehouse_path), read_only=True) as con:
        cards = con.execute(
            "select member_id, id_value from member_identifiers where id_type = 'card_no' order by all"
        ).fetchall()
    member, card = next((m, c) for m, c in cards if m in sending)
    folder = data / "consent" / "events" / f"dt={SCORE_DAY}"
    folder.mkdir(parents=True)
    event = {"event_id": "td-1", "id_type": "card_no", "id_value": card, "scope": "marketing",
             "granted": "false", "event_time": f"{SCORE_DAY} 08:00:00", "source": "sms_reply_TD"}  # fmt: skip
    (folder / "part-0.jsonl").write_text(json.dumps(event) + "\n")
    result = run_dag("deliver_segments", SCORE_DAY)
    assert result.ok, result.failed_tasks
    received = {r.get("member_id") for r in server.state.snapshot()["received"]}
    assert len(received) > 100 and member not in received
    assert (ws.landing_dir / "consent" / "events" / f"dt={SCORE_DAY}" / "part-0.parquet").exists()
