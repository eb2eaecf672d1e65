"""Suppression: who is not sent today, and why (DESIGN §7).

``decide`` is a pure function over the day's segment assignment and the contact history from the ledger,
so the property tests can drive it with any input. Every member of a segment ends with one status:

- ``send``          goes out in this run (new, or a retry of a send decided earlier for the same date);
- ``already_sent``  this (segment, member, date) was delivered before: never again;
- ``holdout``       kept out on purpose (hash of member and segment) to measure uplift;
- ``suppressed``    with a reason, checked in this order: undeliverable (rejected as such three times),
  opted_out, no_health_consent, no_address, left_programme (a service message whose programme the member
  left), (holdout), stale (the date is too old to act on), once_per_member, once_per_due_cycle,
  message_cooldown (the same message within the segment's cooldown), already_contacted_today,
  member_daily_cap, member_weekly_cap (marketing), service_daily_cap, service_weekly_cap (service),
  sms_daily_cap, wecom_monthly_cap, quiet_hours, segment_daily_cap, staff_capacity.

1-on-1 work (the ``wecom`` channel) goes through the member's staff owner, who can serve only so many members
a day: past the segment caps, each staff member's new sends of the day are ranked by ``expected_value``
(``memberflow.outreach.queue``) across segments and the rest wait (``staff_capacity``). What the staff member
keeps is their queue of the day.

Frequency is counted on the day a message goes out (China time): a sent row on the day it was sent, an
unsettled one on the day it was last decided. A send retried on a later day than it was decided is checked
against that day's caps like a new one (and counts there once it goes); a retry within the day it was
decided was counted already. Marketing and service messages have caps of their own: a check-in reminder
does not use up the marketing caps. One message per channel and day holds for both (WeCom lets a customer
receive one mass message a day).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import polars as pl

CHINA = ZoneInfo("Asia/Shanghai")
REASONS = (
    "undeliverable",
    "opted_out",
    "no_health_consent",
    "no_address",
    "left_programme",
    "stale",
    "once_per_member",
    "once_per_due_cycle",
    "message_cooldown",
    "already_contacted_today",
    "member_daily_cap",
    "member_weekly_cap",
    "service_daily_cap",
    "service_weekly_cap",
    "sms_daily_cap",
    "wecom_monthly_cap",
    "quiet_hours",
    "segment_daily_cap",
    "staff_capacity",
)
STATUSES = ("send", "already_sent", "holdout", "suppressed")
# Members suppressed for these were never eligible for the holdout (an undeliverable key was a send, so
# not held out: it stays in the denominator).
BEFORE_HOLDOUT = ("opted_out", "no_health_consent", "no_address", "left_programme")
WEEK_DAYS = 7  # the weekly caps count today and the six days before


@dataclass(frozen=True)
class Caps:
    member_per_day: int = 2  # marketing messages per member per China-local day, all channels
    sms_per_day: int = 3  # per phone, carrier rule
    quiet_start: time = time(21, 0)  # no SMS from 21:00 ...
    quiet_end: time = time(8, 0)  # ... to 08:00 China time
    max_age_days: int | None = 3  # a delivery date this many days before today (China) is not sent at all
    member_per_week: int = 3  # marketing messages per member in any 7 days, all channels
    cooldown_days: int = 7  # the same message to a member at most once in this many days (per segment too)
    service_per_day: int = 1  # service messages per member per day
    service_per_week: int = 3  # service messages per member in any 7 days
    staff_per_day: int = 40  # 1-on-1 (WeCom) members per staff member per day: their queue
    staff_capacity: dict[str, int] = field(default_factory=dict)  # staff_userid -> their own capacity

    def capacity_of(self, staff: str | None) -> int:
        """How many 1-on-1 members ``staff`` serves a day."""
        return self.staff_capacity.get(staff or "", self.staff_per_day)

    def wecom_per_month(self, day: date) -> int:
        """WeCom lets a customer receive one mass message a day: at most the days of the month."""
        return calendar.monthrange(day.year, day.month)[1]

    def quiet(self, now: datetime) -> bool:
        local = now.astimezone(CHINA).time()
        return local >= self.quiet_start or local < self.quiet_end


@dataclass
class History:
    """What the ledger says was already decided for sending (sent, in flight or awaiting a retry).

    Days are China-local days a message went out (sent) or is to go out (unsettled); cancelled rows and
    sends given up as undeliverable count nowhere."""

    sent_keys: set[str] = field(default_factory=set)
    unsettled_keys: dict[str, date] = field(default_factory=dict)  # key -> day last decided: retry
    given_up_keys: set[str] = field(default_factory=set)  # rejected as undeliverable again and again
    segment_of_day: dict[str, str] = field(
        default_factory=dict
    )  # member -> segment already sent for the date
    today_total: dict[str, int] = field(default_factory=dict)  # member -> marketing messages today
    week_total: dict[str, int] = field(default_factory=dict)  # member -> marketing messages, last 7 days
    service_today: dict[str, int] = field(default_factory=dict)  # member -> service messages today
    service_week: dict[str, int] = field(default_factory=dict)  # member -> service messages, last 7 days
    today_channels: dict[str, set[str]] = field(default_factory=dict)  # member -> channels today
    sms_today: dict[str, int] = field(default_factory=dict)  # phone_token -> SMS today
    wecom_month: dict[str, int] = field(default_factory=dict)  # member -> WeCom messages this month
    segment_used: dict[str, int] = field(default_factory=dict)  # segment -> keys of the date so far
    # other delivery dates' messages: (member, message) -> the latest day it went, and due cycles covered
    last_message_day: dict[tuple[str, str], date] = field(default_factory=dict)
    cycles_sent: set[tuple[str, str, str]] = field(default_factory=set)  # (member, message, cycle)


def idempotency_key(segment: str, member_id: str, as_of: date) -> str:
    return f"{segment}/{member_id}/{as_of.isoformat()}"


@dataclass(frozen=True)
class Frequency:
    """A segment's frequency rules: its cooldown in days and whether its message goes once per member or
    once per due cycle (segments.yml: cooldown_days, once_per)."""

    cooldown_days: int
    once_per: str | None = None


def decide(
    frame: pl.DataFrame,
    caps_by_segment: dict[str, int],
    history: History,
    as_of: date,
    now: datetime,
    fresh_opt_outs: set[str] | frozenset[str] = frozenset(),
    caps: Caps | None = None,
    frequency: dict[str, Frequency] | None = None,
) -> pl.DataFrame:
    """Add ``idempotency_key``, ``status`` and ``reason`` to an assignment (one row per member).

    Needs columns member_id, segment, channel, health_based, holdout, rank_value, tie, has_wecom,
    has_phone, phone_token, health_consent, opt_out_on_record and (optionally) marketing_opt_out, message
    (default: the segment's name), kind (default marketing), in_programme (default true), cycle,
    staff_owner and expected_value (default: rank_value) for the staff capacity of WeCom rows.
    ``frequency``: segment -> its rules (default: the caps' cooldown, no once-per rule).
    """
    caps = caps or Caps()
    frequency = frequency or {}
    if frame.is_empty():
        return frame.with_columns(
            idempotency_key=pl.lit(None, pl.Utf8), status=pl.lit(None, pl.Utf8), reason=pl.lit(None, pl.Utf8)
        )
    today = now.astimezone(CHINA).date()
    stale = caps.max_age_days is not None and (today - as_of).days > caps.max_age_days
    quiet = caps.quiet(now)
    wecom_cap = caps.wecom_per_month(today)
    defaults = {
        "marketing_opt_out": False,
        "message": None,
        "kind": "marketing",
        "in_programme": True,
        "cycle": None,
    }
    extra = {
        name: frame[name].to_list() if name in frame.columns else [value] * frame.height
        for name, value in defaults.items()
    }
    statuses: list[str] = []
    reasons: list[str | None] = []
    keys: list[str] = []
    candidates: dict[str, list[int]] = {}
    rows = frame.select(
        "member_id", "segment", "channel", "health_based", "holdout", "has_wecom", "has_phone",
        "phone_token", "health_consent", "opt_out_on_record",
    ).iter_rows()  # fmt: skip
    for i, (
        member,
        segment,
        channel,
        health,
        held,
        has_wecom,
        has_phone,
        token,
        consent,
        opt_out,
    ) in enumerate(rows):
        key = idempotency_key(segment, member, as_of)
        keys.append(key)
        message = extra["message"][i] or segment
        service = extra["kind"][i] == "service"
        rules = frequency.get(segment) or Frequency(caps.cooldown_days)
        last = history.last_message_day.get((member, message))
        status, reason = "send", None
        retry = key in history.unsettled_keys
        # a retry decided earlier today was counted against today's caps already; one decided on an
        # earlier day goes through today's caps like a new send
        counted = retry and history.unsettled_keys[key] == today
        kind_today = (history.service_today if service else history.today_total).get(member, 0)
        kind_week = (history.service_week if service else history.week_total).get(member, 0)
        if key in history.sent_keys:
            status = "already_sent"
        elif key in history.given_up_keys:
            status, reason = "suppressed", "undeliverable"
        elif opt_out or extra["marketing_opt_out"][i] or member in fresh_opt_outs:
            status, reason = "suppressed", "opted_out"
        elif health and not consent:
            status, reason = "suppressed", "no_health_consent"
        elif (channel == "wecom" and not has_wecom) or (channel == "sms" and not has_phone):
            status, reason = "suppressed", "no_address"
        elif not extra["in_programme"][i]:
            status, reason = "suppressed", "left_programme"
        elif held:
            status = "holdout"
        elif stale:  # a backfilled or late day: "due in 3 days" would be wrong by now
            status, reason = "suppressed", "stale"
        elif rules.once_per == "member" and last is not None:
            status, reason = "suppressed", "once_per_member"
        elif rules.once_per == "due_cycle" and (member, message, extra["cycle"][i]) in history.cycles_sent:
            status, reason = "suppressed", "once_per_due_cycle"
        elif last is not None and (today - last).days < rules.cooldown_days:
            status, reason = "suppressed", "message_cooldown"
        elif not retry and history.segment_of_day.get(member, segment) != segment:
            # a later plan moved the member: they stay in the segment they were sent for that day
            status, reason = "suppressed", "already_contacted_today"
        elif not counted and channel in history.today_channels.get(member, ()):
            status, reason = "suppressed", "already_contacted_today"
        elif not counted and not service and kind_today >= caps.member_per_day:
            status, reason = "suppressed", "member_daily_cap"
        elif not counted and not service and kind_week >= caps.member_per_week:
            status, reason = "suppressed", "member_weekly_cap"
        elif not counted and service and kind_today >= caps.service_per_day:
            status, reason = "suppressed", "service_daily_cap"
        elif not counted and service and kind_week >= caps.service_per_week:
            status, reason = "suppressed", "service_weekly_cap"
        elif not counted and channel == "sms" and history.sms_today.get(token, 0) >= caps.sms_per_day:
            status, reason = "suppressed", "sms_daily_cap"
        elif not counted and channel == "wecom" and history.wecom_month.get(member, 0) >= wecom_cap:
            status, reason = "suppressed", "wecom_monthly_cap"
        elif channel == "sms" and quiet:
            status, reason = "suppressed", "quiet_hours"
        elif not retry:
            candidates.setdefault(segment, []).append(i)
        statuses.append(status)
        reasons.append(reason)
    # the segment's daily cap: the best-ranked new members fill what earlier runs of the date left
    rank_value, tie = frame["rank_value"].to_list(), frame["tie"].to_list()
    for segment, idx in candidates.items():
        room = max(caps_by_segment[segment] - history.segment_used.get(segment, 0), 0)
        idx.sort(key=lambda i: (-rank_value[i], tie[i]))
        for i in idx[room:]:
            statuses[i], reasons[i] = "suppressed", "segment_daily_cap"
    _staff_capacity(frame, keys, statuses, reasons, history, caps)
    return frame.with_columns(
        idempotency_key=pl.Series(keys, dtype=pl.Utf8),
        status=pl.Series(statuses, dtype=pl.Utf8),
        reason=pl.Series(reasons, dtype=pl.Utf8),
    )


def _staff_capacity(
    frame: pl.DataFrame,
    keys: list[str],
    statuses: list[str],
    reasons: list[str | None],
    history: History,
    caps: Caps,
) -> None:
    """Each staff member keeps their capacity of 1-on-1 members for the day, best expected value first.

    Members already sent or in retry for the date hold their place (a rerun does not take back what a staff
    member was given); new sends fill the room that leaves, across segments."""
    if "staff_owner" not in frame.columns:
        return
    channel, staff = frame["channel"].to_list(), frame["staff_owner"].to_list()
    value_col = "expected_value" if "expected_value" in frame.columns else "rank_value"
    value = frame[value_col].fill_null(float("-inf")).fill_nan(float("-inf")).to_list()
    tie = frame["tie"].to_list()
    held: dict[str, int] = {}
    new: dict[str, list[int]] = {}
    for i, status in enumerate(statuses):
        if channel[i] != "wecom":
            continue
        if status == "already_sent" or (status == "send" and keys[i] in history.unsettled_keys):
            held[staff[i]] = held.get(staff[i], 0) + 1
        elif status == "send":
            new.setdefault(staff[i], []).append(i)
    for owner, idx in new.items():
        room = max(caps.capacity_of(owner) - held.get(owner, 0), 0)
        idx.sort(key=lambda i: (-value[i], tie[i], keys[i]))
        for i in idx[room:]:
            statuses[i], reasons[i] = "suppressed", "staff_capacity"
