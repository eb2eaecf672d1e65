"""Members' tags synced to WeCom corp tags through faults: WeCom ends up holding exactly the members' current
tags (health ones only with consent), a rerun sends nothing, and a change sends only that change."""

from __future__ import annotations

from datetime import timedelta

import duckdb

from devkit.sandbox import SandboxConfig
from memberflow.core.vocab import CATEGORIES, LABELS
from memberflow.outreach.tags import GROUPS, TagLedger, sync_tags
from memberflow.warehouse import publish
from tests.support import MORNING, SCORE_DAY

# WeCom tag names, written out here rather than taken from the code under test
LIFECYCLE = {"new": "新会员", "active": "活跃", "at_risk": "有流失风险", "silent": "沉默", "lost": "已流失"}


def expected_tags(settings) -> dict[str, list[str]]:
    """'staff/external_userid' -> 'group/tag' names, straight from the warehouse."""
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        rows = con.execute(
            """
            with contacts as (
                select d.member_id, d.staff_owner, min(c.external_userid) as ext,
                    coalesce(d.health_data_consent, false) as consent
                from dim_member as d
                inner join member_identifiers as ids
                    on ids.member_id = d.member_id and ids.id_type = 'external_userid'
                inner join stg_wecom__contacts as c on c.external_userid = ids.id_value
                    and c.staff_userid = d.staff_owner and not c.is_removed
                group by all
            ),
            due as (
                select member_id, arg_min(replace(k, 'days_until_due_', ''), v) as category, min(v) as days
                from (unpivot (select member_id, columns('^days_until_due_') from member_features
                               where as_of_date = $day) on columns('^days_until_due_') into name k value v)
                where v >= -7 group by member_id
            )
            select c.staff_owner, c.ext, c.consent, f.lifecycle_stage, f.value_tier,
                (select list(tag_value) from member_tags as t where t.member_id = c.member_id
                   and t.tag_group = 'interest' and t.valid_from <= $day
                   and (t.valid_to is null or t.valid_to > $day)) as interests,
                due.category, due.days
            from contacts as c
            inner join member_features as f on f.member_id = c.member_id and f.as_of_date = $day
            left join due on due.member_id = c.member_id
            """,
            {"day": SCORE_DAY},
        ).fetchall()
    out = {}
    for staff, ext, consent, stage, tier, interests, category, days in rows:
        tags = [f"{GROUPS['lifecycle']}/{LIFECYCLE[stage]}"] if stage else []
        if tier:
            tags.append(f"{GROUPS['value_tier']}/{LABELS['value_tier'][tier][0]}")
        health_interests = {c.interest for c in CATEGORIES.values() if c.health_related}
        for interest in interests or []:
            if consent or interest not in health_interests:
                tags.append(f"{GROUPS['interest']}/{LABELS['interest'][interest][0]}")
        if category and days <= 7 and (consent or not CATEGORIES[category].health_related):
            tags.append(f"{GROUPS['due']}/{CATEGORIES[category].label_zh}")
        if tags:
            out[f"{staff}/{ext}"] = sorted(tags)
    return out


def test_tags_reach_wecom_once_and_then_only_what_changed(delivery_ws, quick_wecom, sandbox):
    server = sandbox(SandboxConfig(failure_rate=0.05, slow_seconds=0.8, seed=5))
    runs = []
    for hour in range(4):  # a run leaves what still failed to the next one
        runs.append(sync_tags(delivery_ws, SCORE_DAY, MORNING + timedelta(hours=hour)))
        if not runs[-1].failed:
            break
    expected = expected_tags(delivery_ws)
    assert len(expected) > 500
    assert sum(server.state.snapshot()["rejected"].values()) > 10  # the faults were real
    assert server.state.tags_of_contacts() == expected
    health = [t for tags in expected.values() for t in tags if t.startswith(GROUPS["interest"])]
    assert health  # interests are tagged, the health ones only with consent (expected_tags)
    assert runs[0].changed == len(expected) and not runs[-1].failed

    calls = server.state.snapshot()["mark_tag_calls"]
    again = sync_tags(delivery_ws, SCORE_DAY, MORNING + timedelta(hours=5))
    assert again.changed == 0 and server.state.snapshot()["mark_tag_calls"] == calls  # nothing sent

    # three members change: one turns lost, one withdraws health-data consent, one's tier moves up
    with duckdb.connect(str(delivery_ws.warehouse_path)) as con:
        members = con.execute(
            """
            select d.member_id from dim_member as d
            inner join member_identifiers as ids
                on ids.member_id = d.member_id and ids.id_type = 'external_userid'
            inner join stg_wecom__contacts as c on c.external_userid = ids.id_value
                and c.staff_userid = d.staff_owner and not c.is_removed
            inner join member_tags as t on t.member_id = d.member_id and t.tag_group = 'interest'
            where d.health_data_consent and t.tag_value in ('calcium', 'blood_glucose', 'blood_pressure')
            group by 1 order by 1 limit 3
            """
        ).fetchall()
        first, second, third = (m[0] for m in members)
        con.execute(
            "update member_features set lifecycle_stage = 'lost' where member_id = ? and as_of_date = ?",
            [first, SCORE_DAY],
        )
        con.execute("update dim_member set health_data_consent = false where member_id = ?", [second])
        con.execute(
            "update member_features set value_tier = 'over_280' where member_id = ? and as_of_date = ? "
            "and value_tier is distinct from 'over_280'",
            [third, SCORE_DAY],
        )
    publish(delivery_ws, "marts", SCORE_DAY.isoformat(), "passed")  # as the gate after a build would
    changed = expected_tags(delivery_ws)
    moved = {k for k in changed.keys() | expected.keys() if changed.get(k) != expected.get(k)}
    assert 2 <= len(moved) <= 3
    after = sync_tags(delivery_ws, SCORE_DAY, MORNING + timedelta(hours=6))
    assert after.changed == len(moved) and not after.failed
    assert server.state.snapshot()["mark_tag_calls"] == calls + len(moved)
    assert server.state.tags_of_contacts() == changed
    statuses = {r["status"] for r in TagLedger.open(delivery_ws).rows()}
    assert statuses == {"applied"}


def test_a_contact_that_left_is_reported_and_the_rest_are_tagged(delivery_ws, quick_wecom, sandbox):
    expected = expected_tags(delivery_ws)
    gone = sorted(expected)[0].split("/", 1)[1]
    reachable = {k.split("/", 1)[1] for k in expected} - {gone}
    server = sandbox(SandboxConfig(wecom_contacts=reachable))
    report = sync_tags(delivery_ws, SCORE_DAY, MORNING)
    assert report.failed == {"not a contact of this staff member any more": 1}
    assert server.state.tags_of_contacts() == {
        k: v for k, v in expected.items() if not k.endswith(f"/{gone}")
    }
