"""Replay consecutive delivery days against the sandbox receivers, and audit what members received.

Outcome checks look where a member would: at what arrived. ``replay`` scores every champion for each day,
passes the scores gate, and delivers the day at 10:00 China time (and, with ``retry_runs``, the day before
once more at 09:30, as the deliver_segments DAG's morning run does), against local sandbox receivers;
``audit`` then reads what the receivers applied, day by day, and counts:

- segment-days whose received members sit at the wrong end of the score their rule selects on: their mean
  probability not above that of the members the rule's score conditions turned away (members who met its
  other conditions); not below, for ``direction: low`` (the segments gate's ``score_end``, on receipts);
- members who received the same message twice within its cooldown (the segment's ``cooldown_days``, or
  outreach.yml's), or a once-per-member message twice;
- members over the marketing caps (per day, per any 7 days) and the service caps.

Used by the outreach tier's multi-day test and by ``bench/outreach_days.py`` (figures on bigger samples).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import partial

import duckdb
import pyarrow.parquet as pq

from devkit.sandbox import SandboxConfig, SandboxServer
from expectations.marts import QualityGateError, gate_warehouse, score_end_rows
from memberflow.core.settings import Settings
from memberflow.core.vocab import MODELS
from memberflow.outreach.run import deliver, frequency_of, plan, write_memberships
from memberflow.outreach.suppression import CHINA, WEEK_DAYS, Caps
from memberflow.pipeline import gate_scores, score_model
from memberflow.segments import TEMPLATES, Segment, load_segments, member_profiles
from ml.datasets import ensure_features
from ml.registry import CHAMPION, NoChampionError, load

WRONG_END_FIELDS = ("segment", "model", "members", "segment_mean", "turned_away", "turned_away_mean")


@dataclass
class Receipt:
    """One message a member received, as the receiver recorded it."""

    day: date
    member_id: str
    segment: str
    message: str
    channel: str


@dataclass
class DayResult:
    day: date
    sent: int
    failed: int
    receipts: list[Receipt]
    gate_ok: bool
    gate_failures: list[str] = field(default_factory=list)


@contextmanager
def sandbox_env(failure_rate: float = 0.0, seed: int = 0) -> Iterator:
    """A sandbox server with the connectors pointed at it for the duration (environment restored after)."""
    # the sandbox cannot tell days apart (the sender's clock is pinned): no per-number SMS day limit there,
    # the sender's caps are what is being measured
    config = SandboxConfig(
        failure_rate=failure_rate, faults=("5xx",), seed=seed, sms_per_number_per_day=10**9
    )
    server = SandboxServer(config).start()
    saved = {k: os.environ.get(k) for k in server.env()}
    os.environ.update(server.env())
    try:
        yield server
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _wecom_members(settings: Settings) -> dict[str, str]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        rows = con.execute(
            "select id_value, member_id from member_identifiers where id_type = 'external_userid'"
        ).fetchall()
    return dict(rows)


def receipts_of(settings: Settings, records: list[dict], segments: list[Segment], day: date) -> list[Receipt]:
    """What the sandbox applied (its ``received`` rows) as receipts of members on ``day``."""
    by_name = {s.name: s for s in segments}
    wecom_by_message = {s.message: s for s in segments if s.channel == "wecom"}
    message_of_text = {t["zh"]: key for key, t in TEMPLATES.items()}
    externals = _wecom_members(settings) if any(r["api"] == "wecom" for r in records) else {}
    out = []
    for r in records:
        if r["api"] == "webhook":
            seg, member = by_name[r["segment"]], r["member_id"]
        elif r["api"] == "sms":
            name, member, _ = r["key"].split("/")
            seg = by_name[name]
        else:
            seg = wecom_by_message[message_of_text.get(r["text"], r["text"])]
            member = externals[r["external_userid"]]
        out.append(Receipt(day, member, seg.name, seg.message, seg.channel))
    return out


def file_receipts(settings: Settings, segments: list[Segment], day: date, seen: set[str]) -> list[Receipt]:
    """Rows the file connector wrote since the last look (``seen``: keys already counted)."""
    by_name = {s.name: s for s in segments}
    out = []
    for path in sorted((settings.home / "exports" / "segments").glob("*/*.parquet")):
        for row in pq.read_table(path).to_pylist():
            if row["idempotency_key"] in seen:
                continue
            seen.add(row["idempotency_key"])
            seg = by_name[row["segment"]]
            out.append(Receipt(day, row["member_id"], seg.name, seg.message, "file"))
    return out


def replay(
    settings: Settings,
    days: list[date],
    retry_runs: bool = True,
    failure_rate: float = 0.0,
    on_day=None,
) -> list[DayResult]:
    """Score, gate and deliver each day in turn (see the module docstring); what each day's runs made
    the receivers apply. ``on_day(result)`` is called after each day (progress)."""
    segments = load_segments()
    ensure_features(settings, days)
    champions = []
    for model in MODELS:
        try:
            load(settings, model, CHAMPION)
            champions.append(model)
        except NoChampionError:
            continue
    results: list[DayResult] = []
    seen_files: set[str] = set()
    file_receipts(settings, segments, days[0], seen_files)  # what earlier runs wrote is not this replay's
    with sandbox_env(failure_rate) as server:
        for day in days:
            for model in champions:
                score_model(settings, model, day)
            gate_scores(settings, day)
            start = len(server.state.snapshot()["received"])
            morning = datetime.combine(day, time(10, 0), CHINA)
            runs = []
            if retry_runs and results:
                runs.append(deliver(settings, day - timedelta(days=1), now=morning - timedelta(minutes=30)))
            # as deliver_segments does: the plan, its gate, and the delivery only if the gate passed
            write_memberships(settings, plan(settings, day, morning))
            try:
                gate_ok, failures = gate_warehouse(settings, day, gate="segments").ok, []
            except QualityGateError as exc:
                gate_ok, failures = False, exc.result.messages("critical")
            if gate_ok:
                runs.append(deliver(settings, day, now=morning))
            records = server.state.snapshot()["received"][start:]
            got = receipts_of(settings, records, segments, day)
            got += file_receipts(settings, segments, day, seen_files)
            result = DayResult(
                day,
                sum(r.sent for r in runs),
                sum(sum(r.failed.values()) for r in runs),
                got,
                gate_ok,
                failures,
            )
            results.append(result)
            if on_day:
                on_day(result)
    return results


@dataclass
class Audit:
    days: int
    receipts: int
    by_segment: dict[str, int]
    segment_days_checked: int  # (segment, model, day) with received members and members turned away
    wrong_end: list[dict]  # the ones whose members sat at the wrong end
    repeats_within_cooldown: int  # receipts that came within their message's cooldown of the one before
    repeated_members: int
    once_broken: int  # once-per-member messages received a second time
    over_daily_cap: int  # member-days over the marketing (or service) daily cap
    over_weekly_cap: int  # member-days whose last 7 days hold more than the weekly cap
    same_message_within_7_days: int  # receipts of a message the member had received in the 6 days before

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def audit(
    settings: Settings, receipts: list[Receipt], segments: list[Segment], caps: Caps | None = None
) -> Audit:
    """Count, from the receipts alone, what a member would notice (see the module docstring)."""
    caps = caps or Caps()
    by_name = {s.name: s for s in segments}
    kind_of = {s.message: s.kind for s in segments}
    # segment-days: the members who received a score segment's message against those its score turned away
    wrong, checked = [], 0
    received: dict[date, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for r in receipts:
        received[r.day][r.segment].append(r.member_id)
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        for day, by_segment in sorted(received.items()):
            got = [s for s in segments if by_segment.get(s.name)]
            profiles = partial(member_profiles, con, day)  # read only if a segment selects on a score
            for row in score_end_rows(profiles, got, lambda name, b=by_segment: b.get(name, [])):
                if row["score_gap"] is None:
                    continue
                checked += 1
                if row["score_gap"] <= 0:
                    wrong.append({"day": day.isoformat(), **{k: row[k] for k in WRONG_END_FIELDS}})
    # repeats and caps
    by_member: dict[str, list[Receipt]] = defaultdict(list)
    for r in receipts:
        by_member[r.member_id].append(r)
    repeats = once = daily = weekly = within7 = 0
    repeated_members = set()
    for member, got in by_member.items():
        got.sort(key=lambda r: r.day)
        last: dict[str, date] = {}
        for r in got:
            rules = frequency_of(by_name[r.segment], caps)
            before = last.get(r.message)
            if before is not None:
                if (r.day - before).days < rules.cooldown_days:
                    repeats += 1
                    repeated_members.add(member)
                if (r.day - before).days < WEEK_DAYS:
                    within7 += 1
                if rules.once_per == "member":
                    once += 1
            last[r.message] = r.day
        for kind in ("marketing", "service"):
            days = Counter(r.day for r in got if kind_of.get(r.message, "marketing") == kind)
            day_cap = caps.member_per_day if kind == "marketing" else caps.service_per_day
            week_cap = caps.member_per_week if kind == "marketing" else caps.service_per_week
            daily += sum(1 for n in days.values() if n > day_cap)
            for day in days:
                window = sum(n for d, n in days.items() if 0 <= (day - d).days < WEEK_DAYS)
                weekly += window > week_cap
    return Audit(
        days=len({r.day for r in receipts}),
        receipts=len(receipts),
        by_segment=dict(Counter(r.segment for r in receipts)),
        segment_days_checked=checked,
        wrong_end=wrong,
        repeats_within_cooldown=repeats,
        repeated_members=len(repeated_members),
        once_broken=once,
        over_daily_cap=daily,
        over_weekly_cap=weekly,
        same_message_within_7_days=within7,
    )


def days_between(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]
