"""The delivery ledger: states of a key, what counts as today's contacts, cancel and revive."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from memberflow.outreach.connectors import Outcome
from memberflow.outreach.ledger import Ledger
from memberflow.outreach.suppression import CHINA

DAY = date(2026, 3, 2)
NOON = datetime(2026, 3, 2, 12, tzinfo=CHINA)


def row(member: str, channel: str = "webhook", segment: str = "s", as_of: date = DAY) -> dict:
    return {"idempotency_key": f"{segment}/{member}/{as_of}", "as_of": as_of.isoformat(), "segment": segment,
            "member_id": member, "channel": channel, "phone_token": f"t-{member}"}  # fmt: skip


def test_key_states_and_history(settings):
    ledger = Ledger.open(settings)
    run = ledger.start_run(DAY, NOON, False)
    ledger.decide(run, NOON, [row("a"), row("b", "sms"), row("c", "wecom")])
    ledger.mark_sending(run, NOON, ["s/a/2026-03-02", "s/b/2026-03-02"])
    ledger.settle(run, NOON, [Outcome("s/a/2026-03-02", True, external_id="x1")])
    ledger.settle(run, NOON, [Outcome("s/b/2026-03-02", False, "retryable", "HTTP 503")])
    states = {r["member_id"]: (r["status"], r["attempts"]) for r in ledger.rows(DAY)}
    assert states == {"a": ("sent", 1), "b": ("failed", 1), "c": ("pending", 0)}

    h = ledger.history(DAY, NOON)
    assert h.sent_keys == {"s/a/2026-03-02"}
    assert h.unsettled_keys == {"s/b/2026-03-02", "s/c/2026-03-02"}
    assert h.today_total == {"a": 1, "b": 1, "c": 1}
    assert h.sms_today == {"t-b": 1} and h.wecom_month == {"c": 1} and h.segment_used == {"s": 3}
    # tomorrow the day's counters start again; the month's WeCom count does not
    later = ledger.history(DAY, NOON + timedelta(days=1))
    assert later.today_total == {} and later.wecom_month == {"c": 1}

    # cancelled sends stop counting, and come back as pending when wanted again
    assert ledger.cancel(run, NOON, {"s/c/2026-03-02": "opted_out", "s/a/2026-03-02": "opted_out"}) == 1
    assert ledger.history(DAY, NOON).wecom_month == {}
    ledger.decide(run, NOON, [row("c", "wecom"), row("a")])
    states = {r["member_id"]: r["status"] for r in ledger.rows(DAY)}
    assert states == {"a": "sent", "b": "failed", "c": "pending"}
    assert ledger.unsettled(DAY) == {"s/b/2026-03-02": "failed", "s/c/2026-03-02": "pending"}
