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
    assert h.unsettled_keys == {"s/b/2026-03-02": DAY, "s/c/2026-03-02": DAY}
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


def test_a_key_rejected_as_undeliverable_three_times_is_given_up(settings):
    import polars as pl

    from memberflow.outreach.suppression import decide

    ledger = Ledger.open(settings)
    run = ledger.start_run(DAY, NOON, False)
    ledger.decide(run, NOON, [row("a", "sms"), row("b", "sms")])
    for attempt in range(3):
        ledger.mark_sending(run, NOON, ["s/a/2026-03-02", "s/b/2026-03-02"])
        ledger.settle(run, NOON, [Outcome("s/a/2026-03-02", False, "fatal", "sms isv.MOBILE_NUMBER_ILLEGAL")])
        ledger.settle(run, NOON, [Outcome("s/b/2026-03-02", False, "retryable", "HTTP 503")])
        if attempt < 2:
            assert "s/a/2026-03-02" in ledger.unsettled(DAY)
    h = ledger.history(DAY, NOON)
    assert h.given_up_keys == {"s/a/2026-03-02"} and h.unsettled_keys == {"s/b/2026-03-02": DAY}
    assert ledger.unsettled(DAY) == {"s/b/2026-03-02": "failed"}  # a retryable failure is tried again
    frame = pl.DataFrame(
        {
            "member_id": ["a", "b"], "segment": ["s", "s"], "channel": ["sms", "sms"],
            "health_based": [False, False], "holdout": [False, False], "rank_value": [1.0, 1.0],
            "tie": [0.1, 0.2], "has_wecom": [False, False], "has_phone": [True, True],
            "phone_token": ["t-a", "t-b"], "health_consent": [True, True],
            "opt_out_on_record": [False, False],
        }
    )  # fmt: skip
    out = decide(frame, {"s": 10}, h, DAY, NOON)
    assert out["status"].to_list() == ["suppressed", "send"]
    assert out["reason"].to_list() == ["undeliverable", None]


def test_a_send_counts_on_the_day_it_goes_out(settings):
    """Failed on 2 March and retried on the 3rd: the retry is re-decided on the 3rd, counts against the
    3rd's caps (and the week's), and leaves the 2nd; the message's cooldown runs from the 3rd."""
    ledger = Ledger.open(settings)
    run = ledger.start_run(DAY, NOON, False)
    coupon = {**row("a", "sms"), "message": "replenishment_coupon", "cycle": "calcium:2026-03-05"}
    ledger.decide(run, NOON, [coupon])
    ledger.settle(run, NOON, [Outcome(coupon["idempotency_key"], False, "retryable", "HTTP 503")])
    assert ledger.history(DAY, NOON).today_total == {"a": 1}  # reserved for the day it was decided

    tomorrow = NOON + timedelta(days=1)
    assert ledger.history(DAY, tomorrow).unsettled_keys == {coupon["idempotency_key"]: DAY}
    retry = ledger.start_run(DAY, tomorrow, False)
    ledger.decide(retry, tomorrow, [coupon])
    ledger.settle(retry, tomorrow, [Outcome(coupon["idempotency_key"], True, external_id="b1")])
    assert ledger.history(DAY, NOON).today_total == {}
    on_the_day = ledger.history(DAY + timedelta(days=1), tomorrow)
    assert on_the_day.today_total == {"a": 1} and on_the_day.sms_today == {"t-a": 1}
    assert on_the_day.week_total == {"a": 1} and on_the_day.today_channels == {"a": {"sms"}}
    # a later date's plan sees the message and its due cycle; service counters stay untouched
    later = ledger.history(DAY + timedelta(days=3), NOON + timedelta(days=3))
    assert later.last_message_day == {("a", "replenishment_coupon"): DAY + timedelta(days=1)}
    assert later.cycles_sent == {("a", "replenishment_coupon", "calcium:2026-03-05")}
    assert later.week_total == {"a": 1} and later.service_week == {} and later.today_total == {}
    # eight days on, the week has passed
    assert ledger.history(DAY + timedelta(days=8), NOON + timedelta(days=8)).week_total == {}


def test_an_older_ledger_gains_the_frequency_columns(settings):
    import sqlite3

    from memberflow.outreach.ledger import ledger_path

    path = ledger_path(settings)
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as con:
        con.execute(
            "create table deliveries (idempotency_key text primary key, as_of text not null, segment text "
            "not null, member_id text not null, channel text not null, phone_token text, status text not "
            "null, attempts integer not null default 0, error_class text, last_error text, external_id "
            "text, decided_day text not null, decided_run text not null, last_run text, updated_at text "
            "not null, sent_at text)"
        )
        con.execute(
            "insert into deliveries (idempotency_key, as_of, segment, member_id, channel, status, "
            "decided_day, decided_run, updated_at, sent_at) values ('welcome/a/2026-03-01', '2026-03-01', "
            "'welcome', 'a', 'wecom', 'sent', '2026-03-01', 'r', '2026-03-01', '2026-03-01T10:00:00+08:00')"
        )
    ledger = Ledger.open(settings)
    h = ledger.history(DAY, NOON, {"welcome": "welcome_care_plan"})
    assert h.last_message_day == {("a", "welcome_care_plan"): date(2026, 3, 1)}
    assert h.week_total == {"a": 1}  # an old row is marketing, counted on the day it was decided
