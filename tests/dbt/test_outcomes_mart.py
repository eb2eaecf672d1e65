"""segment_outcomes when a decided member no longer exists, and when the model is built again.

A vanished member was found by the 1M attribution benchmark: a buyer id that only a conflicting order export
carried founded a member, the member was decided in a segment, and it vanished when the order's next version
named the real buyer; the relationships test then failed every daily build from that day on. The model is
incremental by decision date: a build after settled windows keeps them, a plan written again for a date is
attributed again, and what it holds equals a build from scratch."""

from __future__ import annotations

import shutil
from datetime import date, datetime

import pyarrow as pa

from memberflow.outreach.outcomes import units
from memberflow.outreach.run import MEMBERSHIPS_DDL
from memberflow.transform import run_dbt
from memberflow.warehouse import open_warehouse, read_warehouse, replace_rows
from tests.support import make_settings, query

DAY = date(2026, 2, 2)
GONE = "m0123456789abcdef"  # a member id no identifier founds any more


def test_a_vanished_member_keeps_its_row_and_a_rebuild_attributes_only_what_changed(built, tmp_path):
    shutil.copytree(built.home, tmp_path / "ws")
    settings = make_settings(tmp_path / "ws", built.data_dir)
    with read_warehouse(settings) as con:
        kept = con.execute("select member_id from dim_member order by member_id limit 40").fetchall()
    members = [m for (m,) in kept] + [GONE]

    def plan(planned_at: datetime, sent_to_first: bool = True) -> pa.Table:
        return pa.table(
            {
                "as_of": [DAY] * len(members),
                "member_id": members,
                "segment": ["care"] * len(members),
                "channel": ["wecom"] * len(members),
                "priority": [1] * len(members),
                "status": [
                    "holdout" if i % 2 else "send" if i or sent_to_first else "suppressed"
                    for i in range(len(members))
                ],
                "reason": [None if i or sent_to_first else "segment_daily_cap" for i in range(len(members))],
                "holdout": [bool(i % 2) for i in range(len(members))],
                "health_based": [False] * len(members),
                "idempotency_key": [f"care:{m}:{DAY}" for m in members],
                "planned_at": [planned_at] * len(members),
                "message": ["care_checkin"] * len(members),
                "outcome": ["order"] * len(members),
                "outcome_days": [7] * len(members),
            }
        )

    replace_rows(
        settings, MEMBERSHIPS_DDL, "segment_memberships", "true", [], plan(datetime(2026, 2, 2, 9, 30))
    )

    result = run_dbt(settings, ["build", "--select", "segment_outcomes"])
    assert not result.failures, result.failures  # the relationships test holds for the members that exist

    outcomes = query(settings, "select * from segment_outcomes order by decided_member_id")
    gone = outcomes.filter(outcomes["decided_member_id"] == GONE).to_dicts()
    assert len(gone) == 1 and gone[0]["member_id"] == GONE and gone[0]["member_current"] is False
    assert outcomes.filter(outcomes["decided_member_id"] != GONE)["member_current"].all()
    with open_warehouse(settings) as con:
        compared = units(con, date(2026, 3, 1))
    assert GONE not in set(compared["member_id"]) and compared.height == len(members) - 1
    assert outcomes["settled"].all()  # a 7-day window on 02-02 closed weeks before the last landed day

    # the date planned again (its first member now over the cap): the next build attributes it again, though
    # its rows had settled, and the table equals one built from scratch
    replace_rows(
        settings, MEMBERSHIPS_DDL, "segment_memberships", "true", [], plan(datetime(2026, 2, 2, 11), False)
    )
    assert not run_dbt(settings, ["build", "--select", "segment_outcomes"]).failures
    again = query(settings, "select * from segment_outcomes order by decided_member_id")
    first = again.filter(again["decided_member_id"] == members[0]).to_dicts()[0]
    assert first["status"] == "suppressed" and first["reason"] == "segment_daily_cap" and not first["sent"]
    assert not run_dbt(settings, ["build", "--select", "segment_outcomes", "--full-refresh"]).failures
    assert query(settings, "select * from segment_outcomes order by decided_member_id").equals(again)
