"""Outcomes over consecutive daily runs, counted where a member would notice them: at the receivers.

The warehouse holds the whole business sample; features, tags and scores are point in time, so each
replayed day scores and plans with what that day knew. Each day: score every champion, the scores gate,
the 09:30 run that retries the day before, the day's plan, its segments gate, and the delivery, against
sandbox receivers that fail one request in ten.
"""

from __future__ import annotations

from datetime import date

import duckdb
import pytest

from devkit.replay import audit, days_between, replay
from expectations.marts import QualityGateError, gate_warehouse
from memberflow.outreach.connectors import OutreachConfig
from memberflow.outreach.run import plan, write_memberships
from memberflow.segments import load_segments
from tests.support import SCORE_DAY

DAYS = days_between(date(2026, 2, 25), SCORE_DAY)  # six consecutive days


def test_daily_runs_reach_the_top_of_each_score_and_never_repeat_a_message(
    delivery_ws, monkeypatch, tmp_path
):
    override = tmp_path / "outreach.yml"
    override.write_text(  # one attempt per run: what fails is left for the next morning's run
        "channels:\n"
        + "".join(
            f"  {c}: {{max_attempts: 1, backoff_seconds: 0.01, rate_per_second: 500}}\n"
            for c in ("webhook", "wecom", "sms")
        )
    )
    monkeypatch.setenv("MEMBERFLOW_OUTREACH_CONFIG", str(override))
    results = replay(delivery_ws, DAYS, retry_runs=True, failure_rate=0.1)
    assert [r.gate_failures for r in results] == [[] for _ in DAYS]
    assert all(r.sent > 0 for r in results) and sum(r.failed for r in results) > 0  # faults were real
    receipts = [x for r in results for x in r.receipts]
    segments = load_segments()
    report = audit(delivery_ws, receipts, segments, OutreachConfig.load().caps)

    # the right members: every score-based segment-day holds members above the day's population
    assert report.segment_days_checked >= len(DAYS) and report.wrong_end == []
    # once: no message within its cooldown, a welcome once; the caps hold, counted on the day received
    assert report.repeats_within_cooldown == 0 and report.once_broken == 0
    assert report.over_daily_cap == 0 and report.over_weekly_cap == 0
    # the receivers got exactly what the ledger says was sent
    with duckdb.connect(str(delivery_ws.warehouse_path), read_only=True) as con:
        (ledger_sent,) = con.execute(
            "select count(*) from delivery_ledger where status = 'sent' and as_of >= ?", [DAYS[0].isoformat()]
        ).fetchall()[0]
        suppressed = dict(
            con.execute(
                "select reason, count(*) from segment_memberships where status = 'suppressed' "
                "and as_of = ? group by 1",
                [DAYS[-1]],
            ).fetchall()
        )
    assert len(receipts) == ledger_sent
    # by the last day, the frequency rules are what hold members back (with their reasons)
    assert suppressed.get("message_cooldown", 0) + suppressed.get("once_per_member", 0) > 0

    # scores numbered the other way round (as before decile 10 meant the top) stop the plan at its gate
    with duckdb.connect(str(delivery_ws.warehouse_path)) as con:
        con.execute("update member_scores set decile = 11 - decile where as_of = ?", [DAYS[-1]])
    write_memberships(delivery_ws, plan(delivery_ws, DAYS[-1]))
    with pytest.raises(QualityGateError) as info:
        gate_warehouse(delivery_ws, DAYS[-1], gate="segments")
    failed = {f.check for s in info.value.result.suites for f in s.critical}
    assert "score_end" in failed
    samples = [row for s in info.value.result.suites for f in s.critical for row in f.samples]
    assert {"care_high_value_at_risk", "prospect_first_order"} & {row["segment"] for row in samples}
