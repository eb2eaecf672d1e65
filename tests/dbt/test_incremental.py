"""Incremental event staging and daily engagement: a build after new days reads only their partitions (and
recomputes only the members they touch) and ends up with exactly the rows a build from every partition
gives; anything but new days rebuilds."""

from __future__ import annotations

import os
import re
import shutil
from datetime import timedelta
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from memberflow.dbt_env import dbt_environment
from memberflow.transform import (
    BUILT_MANIFEST,
    PLANNED_TABLES,
    _manifest_path,
    build_warehouse,
    plan_incremental_build,
)
from tests.support import DAYS, START, bring_back, hold_back, query

EVENT_MODELS = {
    "wecom.group_events": ("stg_wecom__group_events", "event_id"),
    "miniprogram.events": ("stg_miniprogram__events", "event_id"),
    "livestream.views": ("stg_livestream__views", "session_id, platform, viewer_key, joined_at"),
}
NEW_DAYS = 10


def snapshot(settings) -> dict:
    out = {}
    for model, key in EVENT_MODELS.values():
        out[model] = query(settings, f"select * from {model} order by {key}")
    out["fct_member_daily_engagement"] = query(
        settings, "select * from fct_member_daily_engagement order by member_id, activity_date"
    )
    out["int_source_daily_activity"] = query(
        settings,
        # added_at: when the build that added a row ran
        "select * exclude (added_at) from int_source_daily_activity"
        " order by source, id_value, activity_date, loaded_on",
    )
    return out


def partition(settings, name: str, day) -> str:
    channel, table = name.split(".")
    return str(settings.landing_dir / channel / table / f"dt={day.isoformat()}")


def resend(settings, name: str, old_day, new_day, n: int = 5) -> pa.Table:
    """Land ``n`` rows of an old partition again inside a newer one, as a late re-send would arrive."""
    new_file = partition(settings, name, new_day) + "/part-0.parquet"
    newer = pq.read_table(new_file)
    again = pq.read_table(partition(settings, name, old_day) + "/part-0.parquet").slice(0, n)
    for column in ("_loaded_at", "_source_file"):
        again = again.set_column(
            again.schema.get_field_index(column),
            column,
            pa.repeat(newer[column][0], n).cast(again[column].type),
        )
    pq.write_table(pa.concat_tables([newer, again.select(newer.column_names)]), new_file)
    return again


def test_new_days_are_added_and_anything_else_rebuilds(workspace_copy, tmp_path):
    ws = workspace_copy
    last_old = START + timedelta(days=DAYS - NEW_DAYS - 1)
    new_days = [last_old + timedelta(days=i + 1) for i in range(NEW_DAYS)]
    resent = {
        name: resend(ws, name, START + timedelta(days=9), new_days[0])
        for name in ("wecom.group_events", "miniprogram.events")
    }

    # the newest days of every table leave the landing: for the planned tables, a change at or before
    # the last build's newest day, so a rebuild
    held = hold_back(ws, tmp_path / "held", lambda days: [d for d in days if d in new_days])
    shutil.rmtree(ws.home / "identity")  # members known only from those days are no one's split
    decisions = plan_incremental_build(ws)
    assert all(decisions[name] and new_days[0].isoformat() in decisions[name] for name in decisions)
    build_warehouse(ws, snapshot=False)
    assert query(ws, "select max(loaded_on) as d from stg_wecom__group_events")["d"][0] == last_old
    before = query(ws, "select id_type, id_value, member_id from member_identifiers")

    # they come back: only newer partitions, so the build adds them
    bring_back(held)
    assert set(plan_incremental_build(ws).values()) == {None}
    build_warehouse(ws)
    compiled = Path(dbt_environment(ws)["DBT_TARGET_PATH"]) / "compiled/memberflow/models"
    sql = (compiled / "staging/wecom/stg_wecom__group_events.sql").read_text()
    assert f"/dt={last_old.isoformat()}/~'" in sql
    # the query opens only the new days' partition files: DuckDB prunes the others by file name
    with duckdb.connect(str(ws.warehouse_path), read_only=True) as con:
        plan = "\n".join(row[1] for row in con.execute(f"explain analyze {sql}").fetchall())
    scanned = re.findall(r"Scanning Files: (\d+)/(\d+)", plan)
    landed = len(list((ws.landing_dir / "wecom" / "group_events").glob("dt=*")))
    assert scanned, plan
    assert all((int(opened), int(of)) == (NEW_DAYS, landed + 1) for opened, of in scanned), scanned
    # the engagement fact recomputed only the members the new days touched
    sql = (compiled / "marts/core/fct_member_daily_engagement.sql").read_text()
    assert "fct_member_daily_engagement__affected" in sql
    sql = (compiled / "intermediate/activity/int_source_daily_activity.sql").read_text()
    assert f"loaded_on > cast('{last_old.isoformat()}' as date)" in sql
    # and the new days moved identifiers between members (merges, links), which it had to follow
    after = query(ws, "select id_type, id_value, member_id from member_identifiers")
    moved = before.join(after, on=["id_type", "id_value"], suffix="_after").filter(
        pl.col("member_id") != pl.col("member_id_after")
    )
    assert moved.height > 0 and after.height > before.height
    added = snapshot(ws)

    # the same landing built from every partition gives the same rows, also into a table an older version
    # of its model built without its newest column
    with duckdb.connect(str(ws.warehouse_path)) as con:
        con.execute("alter table int_source_daily_activity drop column added_at")
    _manifest_path(ws, BUILT_MANIFEST).unlink()
    assert set(plan_incremental_build(ws).values()) == {"no earlier build"}
    build_warehouse(ws)
    rebuilt = snapshot(ws)
    added_at = query(ws, "select count(*) as n, count(added_at) as known from int_source_daily_activity")
    assert added_at["known"][0] == added_at["n"][0] > 0
    for name, frame in rebuilt.items():
        assert frame.height > 0 and added[name].equals(frame), name
    # a re-sent event keeps its first landing, once
    for name, rows in resent.items():
        model, _ = EVENT_MODELS[name]
        ids = "', '".join(rows["event_id"].to_pylist())
        kept = query(ws, f"select event_id, loaded_on from {model} where event_id in ('{ids}')")
        assert kept.height == len(rows) and set(kept["loaded_on"]) == {START + timedelta(days=9)}

    # a re-landed old partition (new fingerprint) rebuilds the table it belongs to, and only that one
    old = partition(ws, "livestream.views", START + timedelta(days=3)) + "/part-0.parquet"
    os.utime(old, ns=(os.stat(old).st_atime_ns, os.stat(old).st_mtime_ns + 1_000_000_000))
    decisions = plan_incremental_build(ws)
    assert (START + timedelta(days=3)).isoformat() in decisions["livestream.views"]
    assert decisions["wecom.group_events"] is None and decisions["miniprogram.events"] is None
    assert len(decisions) == len(PLANNED_TABLES)

    # a build that did not finish may hold a day the last successful one never saw: re-landing it rebuilds
    later = START + timedelta(days=DAYS)
    events = "wecom.group_events"
    shutil.copytree(partition(ws, events, new_days[-1]), partition(ws, events, later))
    assert plan_incremental_build(ws)["wecom.group_events"] is None  # the attempt (no build follows)
    relanded = partition(ws, "wecom.group_events", later) + "/part-0.parquet"
    os.utime(relanded, ns=(os.stat(relanded).st_atime_ns, os.stat(relanded).st_mtime_ns + 1_000_000_000))
    assert later.isoformat() in plan_incremental_build(ws)["wecom.group_events"]
