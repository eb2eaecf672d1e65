"""Properties of assignment and suppression, over generated members, rules and contact histories."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memberflow.outreach.suppression import CHINA, Caps, History, decide, idempotency_key
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
    caps = Caps()
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


def test_a_retry_of_an_earlier_decision_skips_the_contact_caps_but_not_the_opt_out():
    frame = pl.DataFrame(
        {
            "member_id": ["a", "b"], "segment": ["s", "s"], "channel": ["webhook", "webhook"],
            "health_based": [False, False], "holdout": [False, False], "rank_value": [1.0, 1.0],
            "tie": [0.1, 0.2], "has_wecom": [True, True], "has_phone": [True, True],
            "phone_token": ["t1", "t2"], "health_consent": [True, True], "opt_out_on_record": [False, False],
        }
    )  # fmt: skip
    history = History(
        unsettled_keys={idempotency_key("s", m, AS_OF) for m in ("a", "b")},
        today_total={"a": 1, "b": 1},
        today_channels={"a": {"webhook"}, "b": {"webhook"}},
    )
    now = datetime(2026, 3, 2, 10, tzinfo=CHINA) + timedelta(minutes=5)
    out = decide(frame, {"s": 1}, history, AS_OF, now, fresh_opt_outs={"b"})
    assert out["status"].to_list() == ["send", "suppressed"]
    assert out["reason"].to_list() == [None, "opted_out"]
