"""Properties of assignment and suppression, over generated members, rules and contact histories."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memberflow.outreach.connectors import Outcome
from memberflow.outreach.ledger import Ledger
from memberflow.outreach.run import LEDGER_COLUMNS
from memberflow.outreach.suppression import CHINA, Caps, Frequency, History, decide, idempotency_key
from memberflow.segments import Condition, Segment, assign, rule_expr

AS_OF = date(2026, 3, 2)
STAGES = ["new", "active", "at_risk", "silent", "lost"]
CHANNELS = ["wecom", "webhook", "sms", "file"]


@st.composite
def members(draw):
    n = draw(st.integers(1, 40))
    ids = [f"m{i:03d}" for i in range(n)]
    col = lambda strategy: [draw(strategy) for _ in ids]  # noqa: E731
    return pl.DataFrame(
        {
            "member_id": ids,
            "tenure_days": col(st.integers(0, 60)),
            "churn_decile": col(st.one_of(st.none(), st.integers(1, 10))),
            "lifecycle_stage": col(st.sampled_from(STAGES)),
            "has_wecom": col(st.booleans()),
            "has_phone": col(st.booleans()),
            "phone_token": [f"t{i % 7}" for i in range(n)],  # shared numbers exercise the SMS cap
            "health_consent": col(st.booleans()),
            "opt_out_on_record": col(st.booleans()),
            "marketing_opt_out": col(st.booleans()),
            "staff_owner": col(st.sampled_from(["staff000", "staff001", "staff002"])),
            "expected_value": col(st.floats(0, 500)),
        },
        schema_overrides={"churn_decile": pl.Int64},
    )


@st.composite
def segment_lists(draw):
    n = draw(st.integers(1, 4))
    priorities = draw(st.lists(st.integers(1, 100), min_size=n, max_size=n, unique=True))
    out = []
    for i, priority in enumerate(priorities):
        when = {}
        if draw(st.booleans()):
            when["tenure_days"] = Condition(max=draw(st.integers(0, 60)))
        if draw(st.booleans()):
            when["churn_decile"] = Condition(min=draw(st.integers(1, 10)))
        if draw(st.booleans()) or not when:
            when["lifecycle_stage"] = Condition(in_=draw(st.lists(st.sampled_from(STAGES), min_size=1)))
        seg = Segment(
            description="generated",
            channel=draw(st.sampled_from(CHANNELS)),
            message="care_checkin",
            priority=priority,
            daily_cap=draw(st.integers(1, 20)),
            holdout=draw(st.sampled_from([0.0, 0.1, 0.5])),
            health_based=draw(st.booleans()),
            when=when,
        )
        seg.name = f"s{i}"
        out.append(seg)
    return out


@st.composite
def histories(draw, ids: list[str], segments: list[Segment]):
    h = History()
    for member in ids:
        if draw(st.booleans()):
            h.today_total[member] = draw(st.integers(0, 3))
            h.today_channels[member] = set(draw(st.lists(st.sampled_from(CHANNELS), max_size=2)))
        if draw(st.booleans()):
            h.wecom_month[member] = draw(st.integers(25, 31))
    for token in range(7):
        h.sms_today[f"t{token}"] = draw(st.integers(0, 4))
    for seg in segments:
        h.segment_used[seg.name] = draw(st.integers(0, 5))
    for member in ids:
        if draw(st.integers(0, 4)) == 0:
            h.segment_of_day[member] = draw(st.sampled_from(segments)).name
    return h


moments = st.datetimes(min_value=datetime(2026, 3, 1), max_value=datetime(2026, 3, 8)).map(
    lambda d: d.replace(tzinfo=CHINA)
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), frame=members(), segments=segment_lists(), now=moments)
def test_suppression_properties(data, frame, segments, now):
    assignment = assign(frame, segments)
    out = assignment.frame
    # one segment per member, and it is the highest-priority one that matches
    assert out["member_id"].n_unique() == out.height
    flags = frame.select([rule_expr(s).alias(s.name) for s in segments])
    for row, flag in zip(frame.iter_rows(named=True), flags.iter_rows(named=True), strict=True):
        matching = [s for s in segments if flag[s.name]]
        picked = out.filter(pl.col("member_id") == row["member_id"])["segment"].to_list()
        assert picked == ([min(matching, key=lambda s: s.priority).name] if matching else [])

    history = data.draw(histories(frame["member_id"].to_list(), segments))
    caps = Caps(
        staff_per_day=data.draw(st.integers(0, 6)), staff_capacity={"staff002": data.draw(st.integers(0, 3))}
    )
    decided = decide(out, {s.name: s.daily_cap for s in segments}, history, AS_OF, now, caps=caps)
    sends = decided.filter(pl.col("status") == "send")
    by_name = {s.name: s for s in segments}
    for r in sends.iter_rows(named=True):
        # opted out anywhere: never sent
        assert not (r["opt_out_on_record"] or r["marketing_opt_out"])
        # health-based segments need the consent
        assert r["health_consent"] or not by_name[r["segment"]].uses_health_data
        # no cap is exceeded by sending this one
        assert history.today_total.get(r["member_id"], 0) + 1 <= caps.member_per_day
        assert r["channel"] not in history.today_channels.get(r["member_id"], set())
        if r["channel"] == "sms":
            assert history.sms_today.get(r["phone_token"], 0) + 1 <= caps.sms_per_day
            assert not caps.quiet(now)  # quiet hours hold
            assert r["has_phone"]
        if r["channel"] == "wecom":
            assert history.wecom_month.get(r["member_id"], 0) + 1 <= caps.wecom_per_month(now.date())
            assert r["has_wecom"]
        assert not r["holdout"]
        # whoever was sent for the date already stays in that segment: never two segments on one day
        assert history.segment_of_day.get(r["member_id"], r["segment"]) == r["segment"]
    if (now.date() - AS_OF).days > caps.max_age_days:
        assert sends.is_empty()  # a date too old to act on sends nothing
    for seg in segments:
        sent = sends.filter(pl.col("segment") == seg.name).height
        assert sent <= max(seg.daily_cap - history.segment_used.get(seg.name, 0), 0)
    # each staff member gets at most their capacity of 1-on-1 members, the best expected value first
    wecom = decided.filter(pl.col("channel") == "wecom")
    for (staff,), mine in wecom.group_by("staff_owner"):
        kept = mine.filter(pl.col("status") == "send")
        assert kept.height <= caps.capacity_of(staff)
        waiting = mine.filter(pl.col("reason") == "staff_capacity")
        if kept.height and waiting.height:
            assert kept["expected_value"].min() >= waiting["expected_value"].max()
    # every member not sent has a status, and every suppression a reason
    assert decided.filter(pl.col("status").is_null()).is_empty()
    assert decided.filter((pl.col("status") == "suppressed") & pl.col("reason").is_null()).is_empty()


def test_holdout_is_deterministic_and_near_its_share():
    frame = pl.DataFrame({"member_id": [f"m{i:05d}" for i in range(20000)], "tenure_days": [3] * 20000})
    seg = Segment(
        description="d", channel="file", message="care_checkin", priority=1, daily_cap=10**6, holdout=0.1,
        when={"tenure_days": Condition(max=7)},
    )  # fmt: skip
    seg.name = "welcome"
    first = assign(frame, [seg]).frame
    again = assign(frame.reverse(), [seg]).frame.sort("member_id")
    assert first.sort("member_id")["holdout"].to_list() == again["holdout"].to_list()
    assert abs(first["holdout"].mean() - 0.1) < 0.01


def test_quiet_hours_are_china_time():
    caps = Caps()
    assert caps.quiet(datetime(2026, 3, 2, 21, 0, tzinfo=CHINA))
    assert caps.quiet(datetime(2026, 3, 2, 7, 59, tzinfo=CHINA))
    assert not caps.quiet(datetime(2026, 3, 2, 8, 0, tzinfo=CHINA))
    # 13:30 UTC is 21:30 in Shanghai
    assert caps.quiet(datetime(2026, 3, 2, 13, 30, tzinfo=UTC))
    assert not caps.quiet(datetime.combine(date(2026, 3, 2), time(20, 59), CHINA))
    assert caps.wecom_per_month(date(2026, 2, 10)) == 28


def _two_retries() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "member_id": ["a", "b"], "segment": ["s", "s"], "channel": ["webhook", "webhook"],
            "health_based": [False, False], "holdout": [False, False], "rank_value": [1.0, 1.0],
            "tie": [0.1, 0.2], "has_wecom": [True, True], "has_phone": [True, True],
            "phone_token": ["t1", "t2"], "health_consent": [True, True], "opt_out_on_record": [False, False],
        }
    )  # fmt: skip


def test_a_retry_within_its_day_skips_the_caps_it_counted_against_but_not_the_opt_out():
    history = History(
        unsettled_keys={idempotency_key("s", m, AS_OF): AS_OF for m in ("a", "b")},
        today_total={"a": 1, "b": 1},
        today_channels={"a": {"webhook"}, "b": {"webhook"}},
    )
    now = datetime(2026, 3, 2, 10, tzinfo=CHINA) + timedelta(minutes=5)
    out = decide(_two_retries(), {"s": 1}, history, AS_OF, now, fresh_opt_outs={"b"})
    assert out["status"].to_list() == ["send", "suppressed"]
    assert out["reason"].to_list() == [None, "opted_out"]


def test_a_retry_on_a_later_day_is_held_to_that_days_caps():
    # decided on 2 March, still unsettled on the 3rd, when the member already had two messages and the
    # other a webhook message: the retry would be their third, or their second webhook message, that day
    history = History(
        unsettled_keys={idempotency_key("s", m, AS_OF): AS_OF for m in ("a", "b")},
        today_total={"a": 2, "b": 1},
        today_channels={"a": {"sms", "wecom"}, "b": {"webhook"}},
    )
    now = datetime(2026, 3, 3, 10, tzinfo=CHINA)
    out = decide(_two_retries(), {"s": 5}, history, AS_OF, now)
    assert out["status"].to_list() == ["suppressed", "suppressed"]
    assert out["reason"].to_list() == ["member_daily_cap", "already_contacted_today"]


# --- frequency across days, through the real ledger ------------------------------------------------------

MESSAGES = ["care_checkin", "replenishment_coupon", "welcome_care_plan", "checkin_reminder"]


@st.composite
def libraries(draw):
    """Two to five segments; some share a message (a coupon by webhook and by SMS), some are service."""
    out = {}
    for i in range(draw(st.integers(2, 5))):
        message = draw(st.sampled_from(MESSAGES))
        once = {"welcome_care_plan": "member", "replenishment_coupon": "due_cycle"}.get(message)
        out[f"s{i}"] = {
            "channel": draw(st.sampled_from(CHANNELS)),
            "message": message,
            "kind": "service" if message == "checkin_reminder" else "marketing",
            "frequency": Frequency(draw(st.sampled_from([1, 3, 7, 14])), once),
        }
    return out


def _deliver_day(ledger, library, frame, as_of, now, caps, fail):
    """What run.deliver does with the ledger, minus the warehouse: plan, cancel, record, send, settle."""
    messages = {name: seg["message"] for name, seg in library.items()}
    history = ledger.history(as_of, now, messages)
    out = decide(
        frame, dict.fromkeys(library, 6), history, as_of, now, caps=caps,
        frequency={name: seg["frequency"] for name, seg in library.items()},
    )  # fmt: skip
    run = ledger.start_run(as_of, now, False)
    wanted = out.filter(pl.col("status") == "send")
    keys = set(wanted["idempotency_key"].to_list())
    reason = dict(zip(out["idempotency_key"].to_list(), out["reason"].to_list(), strict=True))
    ledger.cancel(run, now, {k: reason.get(k) or "gone" for k in ledger.unsettled(as_of) if k not in keys})
    ledger.decide(
        run, now,
        wanted.select(LEDGER_COLUMNS).with_columns(as_of=pl.lit(as_of.isoformat())).to_dicts(),
    )  # fmt: skip
    ledger.settle(
        run, now, [Outcome(k, k not in fail, None if k not in fail else "retryable", None) for k in keys]
    )


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), library=libraries(), days=st.integers(5, 12))
def test_frequency_holds_across_days_and_retries(data, library, days):
    """Daily plans over one to two weeks, each with a retry run of the day before, sends failing at random:
    whatever arrived keeps every cooldown, once-per rule, daily and weekly cap, counted by the day it went."""
    import tempfile
    from pathlib import Path

    caps = Caps()
    ids = [f"m{i}" for i in range(12)]
    names = list(library)
    with tempfile.TemporaryDirectory() as folder:
        ledger = Ledger(Path(folder) / "ledger.sqlite")
        frames = {}
        for d in range(days):
            as_of = AS_OF + timedelta(days=d)
            picked = [data.draw(st.sampled_from([None, *names])) for _ in ids]
            rows = [(m, s) for m, s in zip(ids, picked, strict=True) if s is not None]
            frames[as_of] = pl.DataFrame(
                {
                    "member_id": [m for m, _ in rows], "segment": [s for _, s in rows],
                    "channel": [library[s]["channel"] for _, s in rows],
                    "message": [library[s]["message"] for _, s in rows],
                    "kind": [library[s]["kind"] for _, s in rows],
                    "in_programme": [data.draw(st.booleans()) or library[s]["kind"] != "service"
                                     for _, s in rows],
                    # the due date moves on only sometimes (the member bought again)
                    "cycle": [f"calcium:{data.draw(st.sampled_from(['03-05', '03-20']))}" for _ in rows],
                    "health_based": [False] * len(rows), "holdout": [False] * len(rows),
                    "rank_value": [1.0] * len(rows), "tie": [0.5] * len(rows),
                    "has_wecom": [True] * len(rows), "has_phone": [True] * len(rows),
                    "phone_token": [f"t-{m}" for m, _ in rows], "health_consent": [True] * len(rows),
                    "opt_out_on_record": [False] * len(rows),
                },
                schema_overrides={"segment": pl.Utf8, "member_id": pl.Utf8},
            )  # fmt: skip
            now = datetime.combine(as_of, time(data.draw(st.integers(8, 20))), CHINA)
            fail = {f"{s}/{m}/{as_of.isoformat()}" for m, s in rows if data.draw(st.integers(0, 4)) == 0}
            _deliver_day(ledger, library, frames[as_of], as_of, now, caps, fail)
            yesterday = as_of - timedelta(days=1)
            if yesterday in frames:  # the morning run retries what failed the day before
                _deliver_day(
                    ledger, library, frames[yesterday], yesterday, now + timedelta(hours=1), caps, set()
                )
        sent = pl.DataFrame(ledger.rows()).filter(pl.col("status") == "sent") if ledger.rows() else None
        ledger.close()
    if sent is None or sent.is_empty():
        return
    sent = sent.with_columns(day=pl.col("sent_day").str.to_date())
    # one message per channel and day; the marketing and service caps per day
    assert sent.group_by("member_id", "day", "channel").len()["len"].max() == 1
    per_day = sent.group_by("member_id", "day", "kind").len()
    assert (per_day.filter(pl.col("kind") == "marketing")["len"].max() or 0) <= caps.member_per_day
    for (member, kind), rows in sent.group_by("member_id", "kind"):
        days_sent = sorted(rows["day"].to_list())
        weekly = caps.member_per_week if kind == "marketing" else caps.service_per_week
        daily = caps.member_per_day if kind == "marketing" else caps.service_per_day
        for day in set(days_sent):
            assert sum(1 for x in days_sent if x == day) <= daily, (member, kind, day)
            window = [x for x in days_sent if 0 <= (day - x).days < 7]
            assert len(window) <= weekly, (member, kind, day, days_sent)
    for (member, message), rows in sent.sort("day").group_by("member_id", "message", maintain_order=True):
        rows = rows.sort("day")
        for earlier, later in zip(rows.iter_rows(named=True), rows[1:].iter_rows(named=True), strict=False):
            rules = library[later["segment"]]["frequency"]
            assert (later["day"] - earlier["day"]).days >= rules.cooldown_days, (member, message, rows)
            assert rules.once_per != "member", (member, message)
        if library[rows["segment"][0]]["frequency"].once_per == "due_cycle":
            assert rows["cycle"].n_unique() == rows.height


def test_each_staff_member_keeps_their_capacity_best_expected_value_first_across_segments():
    # two WeCom segments; staff000 has six members, staff001 two, staff001's capacity is 1
    members = [f"m{i}" for i in range(8)]
    frame = pl.DataFrame(
        {
            "member_id": members,
            "segment": ["care", "welcome"] * 4,
            "channel": ["wecom"] * 8,
            "staff_owner": ["staff000"] * 6 + ["staff001"] * 2,
            "expected_value": [5.0, 90.0, 40.0, 1.0, 60.0, 20.0, 3.0, 30.0],
            "health_based": [False] * 8, "holdout": [False] * 8, "rank_value": [1.0] * 8,
            "tie": [i / 10 for i in range(8)], "has_wecom": [True] * 8, "has_phone": [True] * 8,
            "phone_token": members, "health_consent": [True] * 8, "opt_out_on_record": [False] * 8,
        }
    )  # fmt: skip
    caps = Caps(staff_per_day=3, staff_capacity={"staff001": 1})
    now = datetime(2026, 3, 2, 10, tzinfo=CHINA)
    out = decide(frame, {"care": 100, "welcome": 100}, History(), AS_OF, now, caps=caps)
    sent = out.filter(pl.col("status") == "send")["member_id"].sort().to_list()
    assert sent == ["m1", "m2", "m4", "m7"]  # staff000: 90, 60, 40 over two segments; staff001: 30
    assert set(out.filter(pl.col("status") != "send")["reason"]) == {"staff_capacity"}

    # a rerun later in the day: m1 went out, m2's send awaits a retry; both keep their places, so
    # staff000 has room for one new member, the best of those still waiting
    history = History(
        sent_keys={idempotency_key("welcome", "m1", AS_OF)},
        unsettled_keys={idempotency_key("care", "m2", AS_OF): AS_OF},
        today_channels={"m2": {"wecom"}},
    )
    frame = frame.with_columns(
        expected_value=pl.Series([5.0, 1.0, 2.0, 1.0, 4.0, 20.0, 3.0, 30.0])  # the scores moved
    )
    again = decide(frame, {"care": 100, "welcome": 100}, history, AS_OF, now, caps=caps)
    kept = again.filter(pl.col("status").is_in(["send", "already_sent"]))["member_id"].sort().to_list()
    assert kept == ["m1", "m2", "m5", "m7"]
