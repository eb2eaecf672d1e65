"""The delivery ledger: every send decided, every attempt, every outcome (SQLite in the workspace).

One row per idempotency key (segment, member, date) in ``deliveries``, with the message it carries, its
kind (marketing or service), the due cycle it covers (coupons) and the China-local day it went out
(``sent_day``), which the frequency rules count by; its status moves
pending → sending → sent | failed (| cancelled when a later run suppresses it, e.g. a fresh opt-out).
``sending`` is written and committed before a request leaves, so a process killed mid-batch leaves those
rows unsettled and the next run resends them with the same keys (receivers drop a key they already have).
``attempts`` keeps one row per request attempt, ``runs`` one row per delivery run with its report.

SQLite rather than the DuckDB warehouse: a delivery commits after every batch for minutes while rate
limits pace it, and the warehouse allows one writer. Each run copies the ledger into the warehouse table
``delivery_ledger`` for readers (ops API, reports).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from pathlib import Path

from memberflow.core.settings import Settings
from memberflow.core.sqlite import Store
from memberflow.outreach.suppression import CHINA, WEEK_DAYS, History

SCHEMA = """
create table if not exists deliveries (
    idempotency_key text primary key,
    as_of text not null,
    segment text not null,
    member_id text not null,
    channel text not null,
    phone_token text,
    status text not null,
    attempts integer not null default 0,
    error_class text,
    last_error text,
    external_id text,
    decided_day text not null,
    decided_run text not null,
    last_run text,
    updated_at text not null,
    sent_at text
);
create index if not exists deliveries_day on deliveries (decided_day);
create index if not exists deliveries_as_of on deliveries (as_of, status);
create table if not exists attempts (
    run_id text not null,
    idempotency_key text not null,
    attempt integer not null,
    at text not null,
    outcome text not null,
    error_class text,
    detail text
);
create index if not exists attempts_key on attempts (idempotency_key);
create table if not exists runs (
    run_id text primary key,
    as_of text not null,
    started_at text not null,
    finished_at text,
    dry_run integer not null,
    report text
);
"""
UNSETTLED = ("pending", "sending", "failed")
# A key rejected as undeliverable this many times (bad number, not the sender's contact) is not tried again.
GIVE_UP_AFTER = 3
GIVEN_UP = f"(status = 'failed' and error_class = 'fatal' and attempts >= {GIVE_UP_AFTER})"


# Columns added after the first ledgers were written (added to an older ledger when it is opened). Rows
# written before had no message: the first plan fills it in from its segment library, once
# (``pragma user_version`` 1 says it is done).
ADDED_COLUMNS = {
    "message": "text",
    "kind": "text not null default 'marketing'",
    "cycle": "text",
    "sent_day": "text",
}
# The day a row counts on: the day it went out, or (not sent yet) the day it was last decided to go.
DAY = "(case when status = 'sent' then coalesce(sent_day, decided_day) else decided_day end)"
# Rows that count against caps and cooldowns: everything but cancelled rows and undeliverable ones.
COUNTED = f"status != 'cancelled' and not {GIVEN_UP}"


def ledger_path(settings: Settings) -> Path:
    return settings.home / "outreach" / "ledger.sqlite"


class DispatchLedger(Store):
    """A ledger ``connectors.dispatch`` writes around each batch; its ``attempts`` table keeps one row per
    request attempt (run, key, attempt, time, outcome, error class, detail)."""

    def record_attempt(
        self, run_id: str, now: datetime, keys: list[str], attempt: int, outcome: str, error_class, detail
    ) -> None:
        with self._tx() as con:
            con.executemany(
                "insert into attempts values (?, ?, ?, ?, ?, ?, ?)",
                [(run_id, k, attempt, now.isoformat(), outcome, error_class, detail) for k in keys],
            )


class Ledger(DispatchLedger):
    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA)
        have = {r[1] for r in self._con.execute("pragma table_info(deliveries)").fetchall()}
        for name, kind in ADDED_COLUMNS.items():
            if name not in have:
                self._con.execute(f"alter table deliveries add column {name} {kind}")
        if "message" not in have and not self._con.execute("select 1 from deliveries limit 1").fetchall():
            self._con.execute("pragma user_version = 1")  # a new ledger: nothing to fill in
        # the frequency rules count by this day (see DAY)
        self._con.execute(f"create index if not exists deliveries_count_day on deliveries {DAY}")

    @classmethod
    def open(cls, settings: Settings) -> Ledger:
        return cls(ledger_path(settings))

    # ----------------------------------------------------------------------------------------- reading

    def history(self, as_of: date, now: datetime, messages: dict[str, str] | None = None) -> History:
        """The contact history a plan of ``as_of`` decides against, ``now`` giving today (China time).

        ``messages``: segment -> message, for rows written before the ledger kept the message."""
        today = now.astimezone(CHINA).date()
        week_start = (today - timedelta(days=WEEK_DAYS - 1)).isoformat()
        month = today.isoformat()[:7]  # its days: '<month>-01' to '<month>-31' as text
        h = History()
        q = self._con.execute
        if messages and not q("pragma user_version").fetchall()[0][0]:
            with self._tx() as con:
                con.executemany(
                    "update deliveries set message = ? where message is null and segment = ?",
                    [(message, segment) for segment, message in messages.items()],
                )
                con.execute("pragma user_version = 1")
        for key, status, given_up, decided in q(
            f"select idempotency_key, status, {GIVEN_UP}, decided_day from deliveries where as_of = ?",
            [as_of.isoformat()],
        ).fetchall():
            if status == "sent":
                h.sent_keys.add(key)
            elif given_up:
                h.given_up_keys.add(key)
            elif status in UNSETTLED:
                h.unsettled_keys[key] = date.fromisoformat(decided)
        h.segment_of_day = dict(
            q(
                f"select member_id, min(segment) from deliveries where as_of = ? and {COUNTED} group by 1",
                [as_of.isoformat()],
            ).fetchall()
        )
        for member, channel, kind, day, n in q(
            f"select member_id, channel, kind, {DAY}, count(*) from deliveries "
            f"where {DAY} between ? and ? and {COUNTED} group by 1, 2, 3, 4",
            [week_start, today.isoformat()],
        ).fetchall():
            service = kind == "service"
            week = h.service_week if service else h.week_total
            week[member] = week.get(member, 0) + n
            if day == today.isoformat():
                day_total = h.service_today if service else h.today_total
                day_total[member] = day_total.get(member, 0) + n
                h.today_channels.setdefault(member, set()).add(channel)
        h.sms_today = dict(
            q(
                f"select phone_token, count(*) from deliveries where {DAY} = ? and channel = 'sms' "
                f"and {COUNTED} and phone_token is not null group by 1",
                [today.isoformat()],
            ).fetchall()
        )
        h.wecom_month = dict(
            q(
                f"select member_id, count(*) from deliveries where {DAY} between ? and ? "
                f"and channel = 'wecom' and {COUNTED} group by 1",
                [f"{month}-01", f"{month}-31"],
            ).fetchall()
        )
        h.segment_used = dict(
            q(
                f"select segment, count(*) from deliveries where as_of = ? and {COUNTED} group by 1",
                [as_of.isoformat()],
            ).fetchall()
        )
        # other dates' messages (this date's own keys are sent, retried or moved above)
        for member, message, day in q(
            f"select member_id, coalesce(message, segment), max({DAY}) from deliveries "
            f"where as_of != ? and {COUNTED} group by 1, 2",
            [as_of.isoformat()],
        ).fetchall():
            h.last_message_day[(member, message)] = date.fromisoformat(day)
        h.cycles_sent = set(
            q(
                f"select member_id, coalesce(message, segment), cycle from deliveries "
                f"where as_of != ? and cycle is not null and {COUNTED}",
                [as_of.isoformat()],
            ).fetchall()
        )
        return h

    def rows(self, as_of: date | None = None) -> list[dict]:
        cur = self._con.execute(
            "select * from deliveries" + (" where as_of = ?" if as_of else "") + " order by idempotency_key",
            [as_of.isoformat()] if as_of else [],
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def task_ids(self, keys: list[str]) -> dict[str, str]:
        """idempotency key -> the WeCom task (msgid) it went out in, for those of ``keys`` sent to WeCom."""
        out: dict[str, str] = {}
        for start in range(0, len(keys), 500):
            part = keys[start : start + 500]
            marks = ",".join("?" * len(part))
            out.update(
                self._con.execute(
                    "select idempotency_key, external_id from deliveries where channel = 'wecom' "
                    f"and status = 'sent' and external_id is not null and idempotency_key in ({marks})",
                    part,
                ).fetchall()
            )
        return out

    def attempts(self, run_id: str | None = None) -> list[dict]:
        cur = self._con.execute(
            "select * from attempts" + (" where run_id = ?" if run_id else "") + " order by rowid",
            [run_id] if run_id else [],
        )
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    def runs(self) -> list[dict]:
        cur = self._con.execute("select * from runs order by started_at")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    # ----------------------------------------------------------------------------------------- writing

    def start_run(self, as_of: date, now: datetime, dry_run: bool) -> str:
        run_id = f"{as_of.isoformat()}-{now.astimezone(CHINA):%H%M%S}-{uuid.uuid4().hex[:8]}"
        with self._tx() as con:
            con.execute(
                "insert into runs (run_id, as_of, started_at, dry_run) values (?, ?, ?, ?)",
                [run_id, as_of.isoformat(), now.isoformat(), int(dry_run)],
            )
        return run_id

    def finish_run(self, run_id: str, now: datetime, report: dict) -> None:
        with self._tx() as con:
            con.execute(
                "update runs set finished_at = ?, report = ? where run_id = ?",
                [now.isoformat(), json.dumps(report, default=str), run_id],
            )

    def decide(self, run_id: str, now: datetime, rows: Iterable[dict]) -> None:
        """Record new sends as pending. Keys already in the ledger keep their state, except a cancelled one
        (pending again) and an unsettled one decided on an earlier day: it now goes out, and counts, today."""
        today = now.astimezone(CHINA).date().isoformat()
        with self._tx() as con:
            con.executemany(
                "insert into deliveries (idempotency_key, as_of, segment, member_id, channel, phone_token, "
                "message, kind, cycle, status, decided_day, decided_run, updated_at) "
                "values (?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?) "
                # a send cancelled earlier (quiet hours, a plan that changed) and wanted again comes back
                "on conflict (idempotency_key) do update set "
                "status = case when deliveries.status = 'cancelled' then 'pending' "
                "else deliveries.status end, "
                "decided_day = excluded.decided_day, decided_run = excluded.decided_run, "
                "updated_at = excluded.updated_at "
                "where deliveries.status = 'cancelled' or (deliveries.status in "
                "('pending', 'sending', 'failed') and deliveries.decided_day < excluded.decided_day)",
                [
                    (
                        r["idempotency_key"],
                        r["as_of"],
                        r["segment"],
                        r["member_id"],
                        r["channel"],
                        r.get("phone_token"),
                        r.get("message") or r["segment"],
                        r.get("kind") or "marketing",
                        r.get("cycle"),
                        today,
                        run_id,
                        now.isoformat(),
                    )
                    for r in rows
                ],
            )

    def cancel(self, run_id: str, now: datetime, keys_reasons: dict[str, str]) -> int:
        """Unsettled sends a later run no longer wants (opted out since, membership changed)."""
        with self._tx() as con:
            cur = con.executemany(
                "update deliveries set status = 'cancelled', last_error = ?, last_run = ?, updated_at = ? "
                "where idempotency_key = ? and status in ('pending', 'sending', 'failed')",
                [(reason, run_id, now.isoformat(), key) for key, reason in keys_reasons.items()],
            )
            return cur.rowcount

    def unsettled(self, as_of: date) -> dict[str, str]:
        """Keys of the date still to deliver -> their status (not those given up on)."""
        return dict(
            self._con.execute(
                "select idempotency_key, status from deliveries where as_of = ? "
                f"and status in ('pending', 'sending', 'failed') and not {GIVEN_UP}",
                [as_of.isoformat()],
            ).fetchall()
        )

    def in_doubt(self, as_of: date) -> set[str]:
        """Unsettled keys whose last request may have been applied: the process died while sending, or the
        answer was lost (a timeout). Channels without an idempotency key check before sending them again."""
        return {
            r[0]
            for r in self._con.execute(
                "select idempotency_key from deliveries where as_of = ? "
                "and (status = 'sending' or (status = 'failed' and error_class = 'in_doubt'))",
                [as_of.isoformat()],
            ).fetchall()
        }

    def mark_sending(self, run_id: str, now: datetime, keys: list[str]) -> None:
        with self._tx() as con:
            con.executemany(
                "update deliveries set status = 'sending', attempts = attempts + 1, last_run = ?, "
                "updated_at = ? where idempotency_key = ?",
                [(run_id, now.isoformat(), k) for k in keys],
            )

    def settle(self, run_id: str, now: datetime, outcomes: Iterable) -> None:
        """Final state of each key after this run's attempts (see connectors.Outcome)."""
        with self._tx() as con:
            con.executemany(
                "update deliveries set status = ?, error_class = ?, last_error = ?, external_id = ?, "
                "sent_at = case when ? = 'sent' then ? else sent_at end, "
                "sent_day = case when ? = 'sent' then ? else sent_day end, last_run = ?, updated_at = ? "
                "where idempotency_key = ?",
                [
                    (
                        "sent" if o.ok else "failed",
                        o.error_class,
                        o.error,
                        o.external_id,
                        "sent" if o.ok else "failed",
                        now.isoformat(),
                        "sent" if o.ok else "failed",
                        now.astimezone(CHINA).date().isoformat(),
                        run_id,
                        now.isoformat(),
                        o.key,
                    )
                    for o in outcomes
                ],
            )
