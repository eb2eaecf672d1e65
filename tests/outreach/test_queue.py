"""Staff queues on a scored workspace: the right members for each staff member, within capacity, best expected
value first, the same members as the WeCom tasks, scripts that respect health consent, and audited marks."""

from __future__ import annotations

import re
from datetime import timedelta

import duckdb
import httpx
import polars as pl
import pytest

from memberflow.core.vocab import CATEGORIES
from memberflow.outreach.queue import QueueActionError, QueueLog, completion, read_queue
from memberflow.outreach.readback import read_back
from memberflow.outreach.run import deliver, plan
from tests.support import MORNING, SCORE_DAY


def _sql(settings, sql: str, params=None) -> pl.DataFrame:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return pl.from_arrow(con.execute(sql, params or []).to_arrow_table())


@pytest.fixture
def small_capacity(tmp_path, monkeypatch):
    path = tmp_path / "outreach.yml"
    path.write_text("caps:\n  staff_per_day: 6\n  staff_capacity: {staff001: 2}\n")
    monkeypatch.setenv("MEMBERFLOW_OUTREACH_CONFIG", str(path))


def test_each_staff_member_gets_the_best_of_their_1on1_members_once_within_capacity(
    delivery_ws, small_capacity, sandbox
):
    server = sandbox()
    report = deliver(delivery_ws, SCORE_DAY, now=MORNING)
    assert report.suppressed.get("staff_capacity", 0) > 0  # capacity binds on the sample
    queue = _sql(delivery_ws, "select * from staff_queue where as_of = ?", [SCORE_DAY])
    per_staff = dict(queue.group_by("staff_owner").len().iter_rows())
    assert per_staff["staff001"] <= 2 and max(per_staff.values()) == 6

    # every queued member is in a WeCom segment that day, sent (not suppressed, not held out), and owned
    # by the staff member whose queue holds them
    checked = _sql(
        delivery_ws,
        """
        select q.member_id, m.channel, m.status, d.staff_owner = q.staff_owner as owner
        from staff_queue as q
        left join segment_memberships as m
            on m.as_of = q.as_of and m.member_id = q.member_id and m.segment = q.segment
        left join dim_member as d on d.member_id = q.member_id
        where q.as_of = ?
        """,
        [SCORE_DAY],
    )
    assert checked["channel"].to_list() == ["wecom"] * queue.height
    assert set(checked["status"]) == {"send"} and checked["owner"].all()

    # the WeCom tasks went to exactly the queued members, once each
    received = [r["external_userid"] for r in server.state.snapshot()["received"] if r["api"] == "wecom"]
    queued_contacts = _sql(
        delivery_ws,
        "select ids.id_value from staff_queue as q inner join member_identifiers as ids using (member_id) "
        "inner join stg_wecom__contacts as c on c.external_userid = ids.id_value "
        "and c.staff_userid = q.staff_owner and not c.is_removed "
        "where q.as_of = ? and ids.id_type = 'external_userid'",
        [SCORE_DAY],
    )["id_value"]
    assert sorted(received) == sorted(queued_contacts.to_list())

    # the members kept are each staff member's best by expected value: nobody waiting beats anyone queued
    replanned = plan(delivery_ws, SCORE_DAY, now=MORNING).frame.filter(pl.col("channel") == "wecom")
    for (staff,), mine in replanned.group_by("staff_owner"):
        kept = mine.filter(pl.col("status") == "already_sent")
        waiting = mine.filter(pl.col("reason") == "staff_capacity")
        if kept.height and waiting.height:
            assert kept["expected_value"].min() >= waiting["expected_value"].max(), staff
    # ... and the expected value is the segment model's probability × the member's order value
    churn = _sql(
        delivery_ws,
        "select q.member_id, q.propensity, q.order_value, q.expected_value, s.probability, f.avg_order_value "
        "from staff_queue as q inner join member_scores as s on s.member_id = q.member_id "
        "and s.as_of = q.as_of and s.model = 'churn' "
        "inner join member_features as f on f.member_id = q.member_id and f.as_of_date = q.as_of "
        "where q.as_of = ? and q.propensity_basis = 'churn probability'",
        [SCORE_DAY],
    )
    assert churn.height > 0
    for r in churn.iter_rows(named=True):
        assert r["propensity"] == pytest.approx(r["probability"])
        if r["avg_order_value"] is not None:
            assert r["order_value"] == pytest.approx(r["avg_order_value"])
        assert r["expected_value"] == pytest.approx(r["probability"] * r["order_value"])

    # a staff member's page of the queue: in order, with a Chinese script, health details only where allowed
    log = QueueLog.open(delivery_ws)
    staff = (
        queue.group_by("staff_owner")
        .len()
        .sort(["len", "staff_owner"], descending=[True, False])["staff_owner"][0]
    )
    with duckdb.connect(str(delivery_ws.warehouse_path), read_only=True) as con:
        mine = read_queue(con, log, staff, None, "zh", health_allowed=False)
        as_health_manager = read_queue(con, log, staff, SCORE_DAY, "zh", health_allowed=True)
        with pytest.raises(LookupError, match="no staff member"):
            read_queue(con, log, "nobody", None)
    assert mine["as_of"] == SCORE_DAY and mine["total"] == per_staff[staff] == mine["open"]
    values = [i["expected_value"] for i in mine["items"]]
    assert values == sorted(values, reverse=True) and [i["position"] for i in mine["items"]] == list(
        range(1, len(values) + 1)
    )
    for item in mine["items"]:
        assert item["script"] and any("\u4e00" <= ch <= "\u9fff" for ch in item["script"])
        # why, in Chinese: the segment's name and its model's reasons, as the message carried them
        assert re.search(r"[\u4e00-\u9fff]", item["segment_label"])
        assert item["reasons"] and all(re.search(r"[\u4e00-\u9fff]", r) for r in item["reasons"])
        assert item["wecom_status"] == "sent"
        due = item["due"]
        category = CATEGORIES.get(_category(delivery_ws, item["member_id"]) or "")
        if due and category.health_related:  # a 导购's view: the health product stays out of it
            assert due["product"] is None and category.label_zh not in item["script"]
    consent = dict(
        _sql(
            delivery_ws,
            "select member_id, health_consent from staff_queue where as_of = ? and staff_owner = ?",
            [SCORE_DAY, staff],
        ).iter_rows()
    )
    for item in as_health_manager["items"]:
        assert item["health_details"] == consent[item["member_id"]]
        if item["due"] and item["due"]["product"]:
            assert item["due"]["product"] in item["script"]

    # marks: done, a skip needs a reason, every mark kept; completion per staff and segment
    first, second = (
        dict(q)
        for q in queue.filter(pl.col("staff_owner") == staff).sort("position").head(2).iter_rows(named=True)
    )
    log.mark(first, "done", "hm-li", "health_manager")
    with pytest.raises(QueueActionError, match="needs a reason"):
        log.mark(second, "skipped", "hm-li", "health_manager")
    log.mark(second, "skipped", "hm-li", "health_manager", reason="not_reachable")
    log.mark(second, "done", "hm-li", "health_manager")  # reached later that day
    assert [r["action"] for r in log.rows(SCORE_DAY)] == ["done", "skipped", "done"]
    # the next day the member's last touches show the item once, with its latest mark
    touches = log.member_marks([second["member_id"]], SCORE_DAY + timedelta(days=1))[second["member_id"]]
    assert [(t["as_of"], t["action"]) for t in touches] == [(SCORE_DAY.isoformat(), "done")]
    with duckdb.connect(str(delivery_ws.warehouse_path), read_only=True) as con:
        found = completion(con, log, SCORE_DAY)
    row = next(r for r in found["by_staff"] if r["staff_owner"] == staff)
    assert (row["queued"], row["done"], row["skipped"], row["open"]) == (
        per_staff[staff],
        2,
        0,
        per_staff[staff] - 2,
    )
    assert sum(r["queued"] for r in found["by_segment"]) == queue.height

    # WeCom's send results read back: the staff member confirms their task on the phone, one customer had
    # deleted the contact; a hand-made mark stays, what nobody marked is settled by WeCom's answer
    third = dict(queue.filter(pl.col("staff_owner") == staff).sort("position").row(2, named=True))
    log.mark(third, "skipped", "hm-li", "health_manager", reason="member_declined")
    mine = queue.filter(pl.col("staff_owner") == staff).sort("position")
    contacts = mine["external_userid"].to_list()
    assert None not in contacts
    gone = contacts[-1]
    confirm = f"{server.url}/_sandbox/wecom/confirm"
    assert (
        httpx.post(confirm, json={"sender": staff, "external_userid": [gone], "status": 2}).json()["2"] == 1
    )
    assert httpx.post(confirm, json={"sender": staff}).json()["1"] == len(contacts) - 1
    back = read_back(delivery_ws, SCORE_DAY, sleep=lambda s: None)
    waiting = queue.height - mine.height
    assert back.results == {
        "sent": mine.height - 1,
        "not_a_contact": 1,
        **({"waiting": waiting} if waiting else {}),
    }
    assert back.tasks >= 2 and back.unmatched == 0
    assert back.kept_staff_marks == 3 and back.marked == mine.height - 3  # first, second and third kept
    with duckdb.connect(str(delivery_ws.warehouse_path), read_only=True) as con:
        items = {i["item_id"]: i for i in read_queue(con, log, staff, SCORE_DAY, "zh")["items"]}
        others = [
            i
            for s in set(queue["staff_owner"]) - {staff}
            for i in read_queue(con, log, s, SCORE_DAY)["items"]
        ]
    kept = items[third["idempotency_key"]]  # the member declined on the phone after the task was sent
    assert (kept["state"], kept["skip_reason"], kept["wecom_result"]) == (
        "skipped",
        "member_declined",
        "sent",
    )
    by_wecom = [i for i in items.values() if i["marked_by"] == "WeCom"]
    assert len(by_wecom) == mine.height - 3
    for item in by_wecom:
        if item["member_id"] == mine["member_id"][-1]:
            assert item["state"] == "skipped"
            assert item["skip_reason"] == item["wecom_result"] == "not_a_contact"
        else:
            assert item["state"] == "done" and item["wecom_result"] == "sent" and item["wecom_sent_at"]
    assert all(i["state"] == "open" and i["wecom_result"] == "waiting" for i in others)
    # a rerun asks only about what is still waiting and marks nothing new
    again = read_back(delivery_ws, SCORE_DAY, sleep=lambda s: None)
    assert again.asked == waiting and again.marked == 0 and again.results == back.results
    assert len(log.rows(SCORE_DAY)) == 4 + back.marked
    # everyone sends the rest: the waiting items settle, and then there is nothing left to ask WeCom
    for other in set(queue["staff_owner"]) - {staff}:
        httpx.post(confirm, json={"sender": other})
    assert read_back(delivery_ws, SCORE_DAY, sleep=lambda s: None).asked == waiting
    settled = read_back(delivery_ws, SCORE_DAY, sleep=lambda s: None)
    assert (settled.asked, settled.requests) == (0, 0)
    assert settled.results == {"sent": queue.height - 1, "not_a_contact": 1}


def _category(settings, member_id: str) -> str:
    return _sql(
        settings,
        "select next_due_category from staff_queue where member_id = ? and as_of = ?",
        [member_id, SCORE_DAY],
    )["next_due_category"][0]
