"""Each staff member's daily queue of 1-on-1 work (DESIGN §7a).

A WeCom segment's member is served by their staff owner (健康管理师, 导购). Planning ranks the day's new
1-on-1 sends of each staff member by **expected value** across segments and keeps their capacity
(``caps.staff_per_day`` in outreach.yml; the rest are suppressed ``staff_capacity``), so the WeCom task and
the queue hold the same members. ``queue_table`` stores what was kept as ``staff_queue``: one row per item
with the member's context of the day, written beside ``segment_memberships``.

Expected value = propensity × order value:
- propensity: the segment's predicted uplift when a promoted uplift model ranks it (the change the message
  makes; negative counts as none), else the probability of the segment's model (its bottom end for a
  ``direction: low`` segment), else, for a segment without a model (a welcome), the member's conversion
  probability before the first order and repurchase probability after it;
- value: the member's average order value, or the median of the day's members for one without orders.

Staff mark an item done or skipped (with a reason) on the page or through the API. ``QueueLog`` keeps every
mark, never overwriting one (SQLite in the workspace, like the delivery ledger: the warehouse has one writer
and the API only reads it); an item's state is its latest mark.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from memberflow.core.settings import Settings
from memberflow.core.sqlite import connect
from memberflow.outreach.scripts import due_soon, load_scripts, may_show, product_label, script_context
from memberflow.segments import TEMPLATES, Segment, load_segments
from memberflow.warehouse import table_names

QUEUE_DDL = """
create table if not exists staff_queue (
    as_of date not null,
    staff_owner varchar not null,
    position integer not null,
    idempotency_key varchar not null,
    member_id varchar not null,
    segment varchar not null,
    message varchar not null,
    expected_value double,
    propensity double,
    propensity_basis varchar,
    order_value double,
    health_based boolean not null,
    health_consent boolean not null,
    reasons varchar[],
    reasons_zh varchar[],
    lifecycle_stage varchar,
    value_tier varchar,
    tenure_days bigint,
    orders_total bigint,
    days_since_last_order bigint,
    next_due_category varchar,
    days_until_next_due bigint,
    in_checkin_group boolean,
    checkin_streak bigint,
    checkin_rate_prev_21d double,
    planned_at timestamp not null,
    external_userid varchar
);
alter table staff_queue add column if not exists external_userid varchar
"""
CONTEXT_COLUMNS = (
    "lifecycle_stage", "value_tier", "tenure_days", "orders_total", "days_since_last_order",
    "next_due_category", "days_until_next_due", "in_checkin_group", "checkin_streak", "checkin_rate_prev_21d",
)  # fmt: skip
QUEUED = ("send", "already_sent")
SKIP_REASONS = ("not_reachable", "member_declined", "not_appropriate_now", "served_elsewhere", "other")
ACTIONS = ("done", "skipped")
# Marks WeCom's send results make (outreach/readback.py): an item WeCom settled that nobody marked by hand
WECOM_ACTOR = "WeCom"
# WeCom's answer -> the mark it makes on an item nobody marked by hand (action, skip reason); the answers
# not listed (waiting) settle nothing
WECOM_SETTLES = {
    "sent": ("done", None),
    "not_a_contact": ("skipped", "not_a_contact"),
    "wecom_daily_limit": ("skipped", "wecom_daily_limit"),
}
WECOM_SKIP_REASONS = tuple(reason for _, reason in WECOM_SETTLES.values() if reason)


def with_expected_value(
    frame: pl.DataFrame, segments: list[Segment], ranked_by: dict[str, str]
) -> pl.DataFrame:
    """Add ``propensity``, ``propensity_basis``, ``order_value`` and ``expected_value`` to an assignment
    ranked by ``uplift.rank_frame`` (``ranked_by``: the segments it ranked by an uplift model)."""
    if frame.is_empty():
        return frame.with_columns(
            propensity=pl.lit(None, pl.Float64),
            propensity_basis=pl.lit(None, pl.Utf8),
            order_value=pl.lit(None, pl.Float64),
            expected_value=pl.lit(None, pl.Float64),
        )
    propensity = pl.lit(None, pl.Float64)
    basis = pl.lit(None, pl.Utf8)
    first_order = pl.col("orders_total").fill_null(0) == 0
    for seg in segments:
        here = pl.col("segment") == seg.name
        if seg.name in ranked_by:
            p, b = pl.col("rank_value").clip(lower_bound=0.0), pl.lit(f"uplift ({ranked_by[seg.name]})")
        elif seg.models:
            model = seg.models[0]
            col = pl.col(f"{model}_probability")
            p = 1.0 - col if seg.direction == "low" else col
            b = pl.lit(f"{model} probability{' (low end)' if seg.direction == 'low' else ''}")
        else:
            p = (
                pl.when(first_order)
                .then(pl.col("conversion_probability"))
                .otherwise(pl.col("repurchase_probability"))
            )
            b = (
                pl.when(first_order)
                .then(pl.lit("conversion probability"))
                .otherwise(pl.lit("repurchase probability"))
            )
        propensity = pl.when(here).then(p).otherwise(propensity)
        basis = pl.when(here).then(b).otherwise(basis)
    aov = frame["avg_order_value"].cast(pl.Float64)
    typical = aov.drop_nulls().drop_nans().median()
    value = pl.col("avg_order_value").cast(pl.Float64).fill_nan(None).fill_null(typical or 1.0)
    return frame.with_columns(
        propensity=propensity.cast(pl.Float64), propensity_basis=basis, order_value=value
    ).with_columns(expected_value=pl.col("propensity").fill_null(0.0) * pl.col("order_value"))


def queue_table(
    frame: pl.DataFrame, as_of: date, planned_at: datetime, reasons_of: Callable[[dict, str], list[str]]
) -> pa.Table:
    """The ``staff_queue`` rows of a plan: its WeCom members sent or to send, per staff owner by expected
    value. ``reasons_of(row, lang)``: a frame row's reason sentences in en or zh, as the message carries
    them."""
    rows = frame.filter(
        (pl.col("channel") == "wecom") & pl.col("status").is_in(QUEUED) & pl.col("staff_owner").is_not_null()
    )
    rows = rows.with_columns(
        **{
            name: pl.Series([reasons_of(r, lang) for r in rows.iter_rows(named=True)], dtype=pl.List(pl.Utf8))
            for name, lang in (("reasons", "en"), ("reasons_zh", "zh"))
        }
    )
    rows = rows.sort(
        ["staff_owner", "expected_value", "tie"], descending=[False, True, False], nulls_last=True
    )
    return (
        rows.with_columns(position=pl.int_range(1, pl.len() + 1).over("staff_owner").cast(pl.Int32))
        .select(
            pl.lit(as_of).alias("as_of"),
            "staff_owner",
            "position",
            "idempotency_key",
            "member_id",
            "segment",
            "message",
            "expected_value",
            "propensity",
            "propensity_basis",
            "order_value",
            "health_based",
            pl.col("health_consent").fill_null(False),
            "reasons",
            "reasons_zh",
            *(pl.col(c) for c in CONTEXT_COLUMNS),
            pl.lit(planned_at.replace(tzinfo=None)).alias("planned_at"),
            "external_userid",  # whose send result WeCom reports (outreach/readback.py)
        )
        .to_arrow()
    )


# --------------------------------------------------------------------------------------------- the log

LOG_SCHEMA = """
create table if not exists queue_actions (
    action_id integer primary key autoincrement,
    at text not null,
    as_of text not null,
    staff_id text not null,
    idempotency_key text not null,
    member_id text not null,
    segment text not null,
    action text not null,
    reason text,
    note text,
    actor text not null,
    actor_role text not null
);
create index if not exists queue_actions_item on queue_actions (idempotency_key, action_id);
create index if not exists queue_actions_day on queue_actions (as_of, staff_id);
create index if not exists queue_actions_member on queue_actions (member_id);
create table if not exists wecom_results (
    idempotency_key text primary key,
    msgid text not null,
    status text not null,
    sent_at text,
    checked_at text not null
);
"""


class QueueActionError(ValueError):
    """A mark that cannot be recorded as asked (unknown action, a skip without a reason)."""


@dataclass(frozen=True)
class Mark:
    action: str
    reason: str | None
    note: str | None
    at: str
    actor: str


def log_path(settings: Settings) -> Path:
    return settings.home / "outreach" / "queue.sqlite"


class QueueLog:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        with self._connect() as con:
            con.execute("pragma journal_mode=wal")
            con.executescript(LOG_SCHEMA)

    @classmethod
    def open(cls, settings: Settings) -> QueueLog:
        return cls(log_path(settings))

    def _connect(self):
        return connect(self.path)  # one short connection per call: the API serves from a thread pool

    def mark(
        self,
        item: dict[str, Any],
        action: str,
        actor: str,
        actor_role: str,
        reason: str | None = None,
        note: str | None = None,
    ) -> Mark:
        """Record ``action`` (done | skipped) on a queue item (a ``staff_queue`` row as a dict)."""
        if action not in ACTIONS:
            raise QueueActionError(f"unknown action {action!r}: one of {', '.join(ACTIONS)}")
        allowed = SKIP_REASONS + (WECOM_SKIP_REASONS if actor_role == "wecom" else ())
        if action == "skipped" and reason not in allowed:
            raise QueueActionError(f"a skip needs a reason: one of {', '.join(SKIP_REASONS)}")
        if action == "skipped" and reason == "other" and not (note or "").strip():
            raise QueueActionError("a skip for reason 'other' needs a note saying why")
        if action == "done":
            reason = None
        at = datetime.now(UTC).isoformat(timespec="seconds")
        with self._connect() as con:
            con.execute(
                "insert into queue_actions (at, as_of, staff_id, idempotency_key, member_id, segment, "
                "action, reason, note, actor, actor_role) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    at, str(item["as_of"]), item["staff_owner"], item["idempotency_key"], item["member_id"],
                    item["segment"], action, reason, (note or "").strip() or None, actor, actor_role,
                ),
            )  # fmt: skip
        return Mark(action, reason, (note or "").strip() or None, at, actor)

    def wecom_results(self, keys: list[str]) -> dict[str, dict]:
        """idempotency key -> WeCom's last answer about the item (msgid, status, sent_at, checked_at)."""
        out: dict[str, dict] = {}
        with self._connect() as con:
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                for r in con.execute(
                    f"select * from wecom_results where idempotency_key in ({','.join('?' * len(part))})",
                    part,
                ).fetchall():
                    out[r["idempotency_key"]] = dict(r)
        return out

    def record_wecom_results(self, answers: dict[str, dict]) -> tuple[int, int]:
        """Keep WeCom's answers (key -> the queue item with msgid, status, sent_at) and mark the items an
        answer settles that nobody marked by hand. Returns (items marked, staff marks kept)."""
        at = datetime.now(UTC).isoformat(timespec="seconds")
        latest = self.latest(list(answers))
        marks, kept = [], 0
        for key, a in answers.items():
            settle = WECOM_SETTLES.get(a["status"])
            mark = latest.get(key)
            if settle is None:
                continue
            if mark is not None and mark.actor != WECOM_ACTOR:
                kept += 1
            elif mark is None or (mark.action, mark.reason) != settle:
                note = f"WeCom: sent {a['sent_at']}" if a["status"] == "sent" and a["sent_at"] else None
                marks.append(
                    (at, str(a["as_of"]), a["staff_owner"], key, a["member_id"], a["segment"], *settle, note,
                     WECOM_ACTOR, "wecom")
                )  # fmt: skip
        with self._connect() as con:
            con.executemany(
                "insert into wecom_results (idempotency_key, msgid, status, sent_at, checked_at) "
                "values (?, ?, ?, ?, ?) on conflict (idempotency_key) do update set msgid = excluded.msgid, "
                "status = excluded.status, sent_at = excluded.sent_at, checked_at = excluded.checked_at",
                [(k, a["msgid"], a["status"], a["sent_at"], at) for k, a in answers.items()],
            )
            con.executemany(
                "insert into queue_actions (at, as_of, staff_id, idempotency_key, member_id, segment, "
                "action, reason, note, actor, actor_role) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                marks,
            )
        return len(marks), kept

    def latest(self, keys: list[str]) -> dict[str, Mark]:
        """Each item's latest mark."""
        out: dict[str, Mark] = {}
        with self._connect() as con:
            for start in range(0, len(keys), 500):
                part = keys[start : start + 500]
                rows = con.execute(
                    "select idempotency_key, action, reason, note, at, actor from queue_actions "
                    f"where idempotency_key in ({','.join('?' * len(part))}) order by action_id",
                    part,
                ).fetchall()
                for r in rows:
                    out[r["idempotency_key"]] = Mark(r["action"], r["reason"], r["note"], r["at"], r["actor"])
        return out

    def member_marks(self, member_ids: list[str], before: date, per_member: int = 3) -> dict[str, list[dict]]:
        """The state of each member's latest queue items of days before ``before``: per item its latest
        mark (an item marked skipped and then done is one touch, done)."""
        out: dict[str, list[dict]] = {}
        seen: set[str] = set()
        with self._connect() as con:
            for start in range(0, len(member_ids), 500):
                part = member_ids[start : start + 500]
                rows = con.execute(
                    "select idempotency_key, member_id, as_of, segment, action, reason from queue_actions "
                    f"where member_id in ({','.join('?' * len(part))}) and as_of < ? "
                    "order by action_id desc",
                    [*part, before.isoformat()],
                ).fetchall()
                for r in rows:
                    found = out.setdefault(r["member_id"], [])
                    if r["idempotency_key"] not in seen and len(found) < per_member:
                        seen.add(r["idempotency_key"])
                        found.append({k: r[k] for k in ("member_id", "as_of", "segment", "action", "reason")})
        return out

    def rows(self, as_of: date | None = None) -> list[dict]:
        with self._connect() as con:
            sql = "select * from queue_actions"
            rows = con.execute(
                sql + (" where as_of = ? order by action_id" if as_of else " order by action_id"),
                [as_of.isoformat()] if as_of else [],
            ).fetchall()
        return [dict(r) for r in rows]


# --------------------------------------------------------------------------------------------- reading


class NoQueue(LookupError):
    """No queue for this staff member and day (the message says why)."""


def queue_days(con) -> list[date]:
    """Days with a stored queue, newest first."""
    if "staff_queue" not in table_names(con):
        return []
    return [
        r[0] for r in con.execute("select distinct as_of from staff_queue order by as_of desc").fetchall()
    ]


def _frame(con, sql: str, params: list) -> pl.DataFrame:
    return con.sql(sql, params=params).pl()


def read_queue(
    con,
    log: QueueLog,
    staff: str,
    as_of: date | None,
    lang: str = "zh",
    health_allowed: bool = False,
) -> dict[str, Any]:
    """A staff member's queue of the day (default: the newest day with queues): items in order with the
    member's context, the script in ``lang``, the WeCom task's status, the last touches and the mark.

    ``health_allowed``: the reader's role may see health details; each member's own consent decides too."""
    days = queue_days(con)
    if not days:
        raise NoQueue(
            "no staff queues yet: queues are made when a day's segments are planned (memberflow deliver)"
        )
    day = as_of or days[0]
    if day not in days:
        raise NoQueue(f"no queues for {day}: the days with queues run {days[-1]} to {days[0]}")
    known = (
        con.execute("select count(*) from dim_member where staff_owner = ?", [staff]).fetchall()[0][0]
        + con.execute("select count(*) from staff_queue where staff_owner = ?", [staff]).fetchall()[0][0]
    )
    if not known:
        raise NoQueue(f"no staff member {staff!r} owns any member")
    ledger = "delivery_ledger" in table_names(con)
    items = _frame(
        con,
        f"""
        select q.*, m.phone_masked,
            {"l.status" if ledger else "null"} as wecom_status,
            {"l.last_error" if ledger else "null"} as wecom_error
        from staff_queue as q
        left join dim_member as m using (member_id)
        {"left join delivery_ledger as l on l.idempotency_key = q.idempotency_key" if ledger else ""}
        where q.as_of = ? and q.staff_owner = ?
        order by q.position
        """,
        [day, staff],
    )
    members = items["member_id"].to_list()
    touches: dict[str, list[dict]] = {}
    if ledger and members:
        con.register("queued_members", pl.DataFrame({"member_id": members}).to_arrow())
        for member_id, as_of_, segment, channel, status in con.execute(
            """
            select member_id, as_of, segment, channel, status from (
                select l.*, row_number() over (partition by member_id order by as_of desc, segment) as n
                from delivery_ledger as l inner join queued_members using (member_id)
                where as_of < ? and status = 'sent'
            ) where n <= 3 order by member_id, as_of desc
            """,
            [day],
        ).fetchall():
            touches.setdefault(member_id, []).append(
                {"as_of": as_of_, "segment": segment, "channel": channel, "status": status}
            )
        con.unregister("queued_members")
    marks = log.latest(items["idempotency_key"].to_list())
    results = log.wecom_results(items["idempotency_key"].to_list())
    earlier = log.member_marks(members, day)
    scripts = load_scripts()
    labels = {s.name: s for s in load_segments()}
    out = []
    for row in items.iter_rows(named=True):
        health = health_allowed and bool(row["health_consent"])
        mark = marks.get(row["idempotency_key"])
        script = scripts.render(row["message"], lang, script_context(row, lang, health))  # type: ignore[arg-type]
        seg = labels.get(row["segment"])
        out.append(
            {
                "position": row["position"],
                "item_id": row["idempotency_key"],
                "member_id": row["member_id"],
                "phone_masked": row["phone_masked"],
                "segment": row["segment"],
                "segment_label": seg.label_in(lang) if seg else row["segment"],
                "segment_description": seg.description_in(lang) if seg else None,
                "message": row["message"],
                "expected_value": row["expected_value"],
                "propensity": row["propensity"],
                "propensity_basis": row["propensity_basis"],
                "order_value": row["order_value"],
                "reasons": list((lang == "zh" and row["reasons_zh"]) or row["reasons"] or []),
                "due": _due(row, lang, health),
                "programme": "checkin_group" if row["in_checkin_group"] else None,
                "lifecycle_stage": row["lifecycle_stage"],
                "value_tier": row["value_tier"],
                "script": script or TEMPLATES.get(row["message"], {}).get(lang),
                "health_details": health,
                "wecom_status": row["wecom_status"],
                "wecom_error": row["wecom_error"],
                "wecom_result": results.get(row["idempotency_key"], {}).get("status"),
                "wecom_sent_at": results.get(row["idempotency_key"], {}).get("sent_at"),
                "last_touches": touches.get(row["member_id"], [])
                + [
                    {"as_of": m["as_of"], "segment": m["segment"], "channel": "queue", "status": m["action"]}
                    for m in earlier.get(row["member_id"], [])
                ],
                "state": mark.action if mark else "open",
                "skip_reason": mark.reason if mark else None,
                "note": mark.note if mark else None,
                "marked_at": mark.at if mark else None,
                "marked_by": mark.actor if mark else None,
            }
        )
    counts = {s: sum(1 for i in out if i["state"] == s) for s in ("open", *ACTIONS)}
    return {"staff_id": staff, "as_of": day, "dates": days, "total": len(out), **counts, "items": out}


def _due(row: dict, lang: str, health: bool) -> dict[str, Any] | None:
    category = row["next_due_category"]
    if not due_soon(category, row["days_until_next_due"]):
        return None
    if not may_show(category, health):
        return {"product": None, "in_days": row["days_until_next_due"], "withheld": "health data"}
    return {
        "product": product_label(category, lang),
        "category": category,
        "in_days": row["days_until_next_due"],
    }


def queue_item(con, staff: str, item_id: str) -> dict[str, Any] | None:
    """One stored queue item of ``staff`` (its ``staff_queue`` row), or None."""
    if "staff_queue" not in table_names(con):
        return None
    found = _frame(
        con, "select * from staff_queue where staff_owner = ? and idempotency_key = ?", [staff, item_id]
    )
    return found.row(0, named=True) if found.height else None


def completion(
    con, log: QueueLog, as_of: date, staff: set[str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Queued, done, skipped and open items of the day per staff member and per segment (of ``staff``
    only, when given: a store's)."""
    if "staff_queue" not in table_names(con):
        return {"by_staff": [], "by_segment": []}
    items = _frame(
        con, "select staff_owner, segment, idempotency_key from staff_queue where as_of = ?", [as_of]
    )
    if staff is not None:
        items = items.filter(pl.col("staff_owner").is_in(sorted(staff)))
    marks = log.latest(items["idempotency_key"].to_list())
    items = items.with_columns(
        state=pl.Series(
            [marks[k].action if k in marks else "open" for k in items["idempotency_key"]], dtype=pl.Utf8
        )
    )

    def per(column: str) -> list[dict[str, Any]]:
        grouped = items.group_by(column).agg(
            queued=pl.len(),
            done=(pl.col("state") == "done").sum(),
            skipped=(pl.col("state") == "skipped").sum(),
            open=(pl.col("state") == "open").sum(),
        )
        return (
            grouped.with_columns(completion=(pl.col("done") + pl.col("skipped")) / pl.col("queued"))
            .sort(column)
            .to_dicts()
        )

    return {"by_staff": per("staff_owner"), "by_segment": per("segment")}
