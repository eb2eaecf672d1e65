"""Three days of the daily chain on a real Airflow scheduler (CeleryExecutor with two workers on Redis,
PostgreSQL metadata) and a real MLflow server (PostgreSQL, authentication on), driven only through Airflow's
REST API.

Training runs on its schedule (the Monday 04:00 run, backfilled), each day is a backfilled extract run, and
the Assets do the rest: landed tables -> transform_members -> score_members -> deliver_segments. The second
day's orders arrive in fen instead of yuan: the landing gate fails, nothing downstream runs; the file is
fixed, the table's extract task is cleared with what follows it, and the chain completes. Then: every run
succeeded in the end, no member got a message twice, rerunning a day's delivery sends nothing, each model
has a champion, both workers ran tasks while the warehouse pool kept DuckDB's writers one at a time
across them, and no log holds a plain phone number.
"""

from __future__ import annotations

import csv
import io
import itertools
import re
import time
from datetime import datetime, timedelta

import duckdb
import pytest

from memberflow.assets import WAREHOUSE_POOL
from tests.integration.stack import CELERY_WORKERS, DAYS, logical
from tests.support import vault_phones

pytestmark = pytest.mark.integration

CHAIN = ("transform_members", "score_members", "deliver_segments")
RUN_TIMEOUT = 900


def plant_fen_amounts(data_dir, day) -> tuple:
    """The channel re-exported its orders in fen: every amount x100 (the landing gate's amount checks)."""
    path = data_dir / "ecommerce" / "orders" / f"dt={day.isoformat()}" / "part-0.csv"
    original = path.read_bytes()
    rows = list(csv.DictReader(io.StringIO(original.decode("utf-8"))))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        if row["amount_cny"]:
            row["amount_cny"] = f"{float(row['amount_cny']) * 100:.2f}"
        writer.writerow(row)
    path.write_text(out.getvalue(), encoding="utf-8")
    return path, original


def states(api, dag_id, run_id) -> dict[str, str]:
    return {ti["task_id"]: ti["state"] for ti in api.task_instances(dag_id, run_id)}


def follow_chain(api, stack, known: dict[str, set[str]]) -> dict[str, dict]:
    """Wait for the Asset-triggered run of each downstream DAG, in order; each must succeed."""
    finished = {}
    for dag_id in CHAIN:
        run = api.wait_new_run(dag_id, known[dag_id], RUN_TIMEOUT, stack.check_alive)
        assert run["state"] == "success", (dag_id, run["dag_run_id"], _failed(api, dag_id, run))
        known[dag_id].add(run["dag_run_id"])
        finished[dag_id] = run
    return finished


def _failed(api, dag_id, run) -> dict:
    found = states(api, dag_id, run["dag_run_id"])
    return {task: state for task, state in found.items() if state not in ("success", "skipped")}


def ledger(settings) -> list[tuple]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return con.execute(
            "select as_of, segment, member_id, channel, status, idempotency_key from delivery_ledger"
        ).fetchall()


def test_three_days_fail_fix_and_deliver_once_on_a_real_scheduler(production):
    stack, api, settings, sandbox, mlflow_env = production
    began = time.monotonic()
    for dag_id in sorted(api.dags()):
        api.set_paused(dag_id, False)
    known = {dag_id: set() for dag_id in CHAIN}

    # training on its schedule: the Monday 04:00 run of the first day, from the history landed before go-live
    api.backfill("train_models", logical(DAYS[0]), logical(DAYS[0], 23))
    train = api.run_at("train_models", logical(DAYS[0], 4))
    train = api.wait_run("train_models", train["dag_run_id"], RUN_TIMEOUT, stack.check_alive)
    assert train["state"] == "success", _failed(api, "train_models", train)

    extract_runs = {}
    for day in DAYS:
        planted = plant_fen_amounts(settings.data_dir, day) if day == DAYS[1] else None
        api.backfill("extract_channels", logical(day), logical(day))
        run = api.run_at("extract_channels", logical(day))
        run = api.wait_run("extract_channels", run["dag_run_id"], RUN_TIMEOUT, stack.check_alive)
        extract_runs[day] = run["dag_run_id"]
        if planted:
            # the gate stopped the orders table; the other tables published, the transform waits for it
            assert run["state"] == "failed"
            failed = states(api, "extract_channels", run["dag_run_id"])
            assert failed["ecommerce__orders__gate"] == "failed"
            assert failed["ecommerce__orders__publish"] == "upstream_failed"
            assert failed["wecom__contacts__publish"] == "success"
            gate_log = api.task_log("extract_channels", run["dag_run_id"], "ecommerce__orders__gate", 1)
            assert "amount" in gate_log
            time.sleep(10)  # give the scheduler a chance to (wrongly) start the transform
            assert {r["dag_run_id"] for r in api.runs("transform_members")} == known["transform_members"]
            # fix the data, clear the table's extract and what follows it (clearing only the failed gate
            # would validate the same staged rows again): extract, gate and publish run, the Assets start
            # the chain
            path, original = planted
            path.write_bytes(original)
            table = "ecommerce__orders"
            cleared = api.clear("extract_channels", run["dag_run_id"], [table], only_failed=False)
            cleared_ids = {t["task_id"] for t in cleared}
            assert {table, f"{table}__gate", f"{table}__publish"} <= cleared_ids
            assert "wecom__contacts" not in cleared_ids
            run = api.wait_run("extract_channels", run["dag_run_id"], RUN_TIMEOUT, stack.check_alive)
        assert run["state"] == "success", _failed(api, "extract_channels", run)
        chain = follow_chain(api, stack, known)
        # the day's scores are for the day after it; delivery sends that date
        deliver_state = states(api, "deliver_segments", chain["deliver_segments"]["dag_run_id"])
        assert deliver_state["deliver"] == "success"

    # every day succeeded in the end, and each downstream DAG ran once per day
    for day, run_id in extract_runs.items():
        assert api.run("extract_channels", run_id)["state"] == "success", day
    for dag_id in CHAIN:
        runs = api.runs(dag_id)
        assert len(runs) == len(DAYS) and {r["state"] for r in runs} == {"success"}, dag_id

    # each member was delivered at most once per day, and the sandbox saw each message once
    rows = ledger(settings)
    sent = sorted(r for r in rows if r[4] == "sent")
    assert {r[0] for r in sent} == {d + timedelta(days=1) for d in DAYS}
    per_day = {}
    for as_of, _segment, member, *_ in sent:
        per_day.setdefault((as_of, member), 0)
        per_day[(as_of, member)] += 1
    assert max(per_day.values()) == 1
    # the APIs applied exactly the ledger's sends (file exports go to ops, not to an API); webhook and SMS
    # carry the idempotency key, WeCom has none and is covered by the count
    received = sandbox.state.snapshot()
    assert received["duplicates"] == 0
    assert len(received["received"]) == len([r for r in sent if r[3] != "file"]) > 0
    keys = [m["key"] for m in received["received"] if m["key"] is not None]
    assert len(keys) == len(set(keys)) > 0

    # rerunning the last day's delivery plans again and sends nothing new
    last_run = chain["deliver_segments"]["dag_run_id"]
    assert len(api.clear("deliver_segments", last_run, only_failed=False)) == 7
    again = api.wait_run("deliver_segments", last_run, RUN_TIMEOUT, stack.check_alive)
    assert again["state"] == "success"
    assert sandbox.state.snapshot()["received"] == received["received"]
    assert sandbox.state.snapshot()["mark_tag_calls"] == received["mark_tag_calls"] > 0  # tags: only changes
    assert sorted(r for r in ledger(settings) if r[4] == "sent") == sent

    # both Celery workers took tasks, and no two tasks that write the warehouse ever overlapped: the pool
    # orders DuckDB's single writer across workers (a file lock alone would hold a worker slot waiting)
    taken = stack.tasks_run_by_worker()
    assert len(taken) == CELERY_WORKERS and min(taken.values()) > 0, taken
    writers = sorted(
        (datetime.fromisoformat(ti["start_date"]), datetime.fromisoformat(ti["end_date"]), ti["task_id"])
        for dag_id in CHAIN
        for run in api.runs(dag_id)
        for ti in api.task_instances(dag_id, run["dag_run_id"])
        if ti["pool"] == WAREHOUSE_POOL and ti["start_date"] and ti["end_date"]
    )
    assert len(writers) >= len(DAYS) * len(CHAIN)
    for earlier, later in itertools.pairwise(writers):
        assert earlier[1] <= later[0], (earlier, later)

    # the registry on the MLflow server has a champion for every model
    from ml.registry import CHAMPION, alias_version

    with pytest.MonkeyPatch.context() as mp:
        for name, value in mlflow_env.items():
            mp.setenv(name, value)
        from tests.support import make_settings

        remote = make_settings(settings.home, settings.data_dir, MEMBERFLOW_MLFLOW_URI=stack.mlflow_url)
        for model in ("repurchase", "churn", "conversion"):
            assert alias_version(remote, model, CHAMPION) is not None, model

    # no plain phone number in any log: task logs, and what every service printed
    phones = vault_phones(settings)
    assert len(phones) > 500
    logs = [p for p in (stack.root / "airflow" / "logs").rglob("*") if p.is_file()]
    logs += [s.log for s in stack.services]
    text = "\n".join(p.read_text(errors="replace") for p in logs)
    assert "ecommerce__orders__gate" in text and "deliver_segments" in text
    digits = set(re.findall(r"(?<!\d)1\d{10}(?!\d)", text))
    assert not digits & phones
    elapsed = time.monotonic() - began
    print(
        f"integration chain: {elapsed:.0f} s, {len(sent)} messages sent over {len(DAYS)} days; "
        f"task workloads per Celery worker: {taken}; {len(writers)} warehouse writers, none overlapping"
    )
