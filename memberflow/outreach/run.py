"""A delivery run: plan the day's segments, suppress, send what is new, record and report.

``plan`` reads the warehouse (features, tags, scores of the date), the newest landed consent answers (an
opt-out that landed after the marts were built still counts) and the ledger's contact history, and decides
every member's status. ``write_memberships`` stores the plan as ``segment_memberships`` (what the segments
quality gate validates). ``deliver`` first refuses to send while consent is not current
(``require_current_consent``), plans again right before sending, cancels unsettled sends the plan no longer
wants, sends through the connectors and writes a report under reports/delivery/<date>/.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import polars as pl
import pyarrow as pa

from memberflow.core.contracts import get_contract
from memberflow.core.settings import Settings, get_settings
from memberflow.core.vocab import MODELS
from memberflow.outreach.connectors import (
    FatalError,
    Message,
    Outcome,
    OutreachConfig,
    dispatch,
    make_connector,
)
from memberflow.outreach.ledger import Ledger
from memberflow.outreach.queue import QUEUE_DDL, queue_table, with_expected_value
from memberflow.outreach.suppression import CHINA, Caps, Frequency, decide
from memberflow.outreach.uplift import rank_frame
from memberflow.segments import Segment, assign, kept_profiles, load_segments
from memberflow.warehouse import published_marker, read_warehouse, replace_rows, require_published
from ml.score import explain

MEMBERSHIPS_DDL = """
create table if not exists segment_memberships (
    as_of date not null,
    member_id varchar not null,
    segment varchar not null,
    channel varchar not null,
    priority integer not null,
    status varchar not null,
    reason varchar,
    holdout boolean not null,
    health_based boolean not null,
    idempotency_key varchar not null,
    planned_at timestamp not null
);
-- added later: what the decision is judged by (the segment's outcome over its window); older warehouses
-- get the columns on their next plan, with nulls in the rows before
alter table segment_memberships add column if not exists message varchar;
alter table segment_memberships add column if not exists outcome varchar;
alter table segment_memberships add column if not exists outcome_days integer;
"""
LEDGER_DDL = """
create table if not exists delivery_ledger (
    idempotency_key varchar, as_of date, segment varchar, member_id varchar, channel varchar,
    status varchar, attempts integer, error_class varchar, last_error varchar, external_id varchar,
    decided_day date, decided_run varchar, last_run varchar, updated_at timestamptz, sent_at timestamptz
)
"""


def now_china() -> datetime:
    """The delivery clock: wall-clock now, unless MEMBERFLOW_CLOCK pins it (replays and tests)."""
    pinned = get_settings().clock
    if pinned:
        moment = datetime.fromisoformat(pinned)
        return (moment if moment.tzinfo else moment.replace(tzinfo=CHINA)).astimezone(CHINA)
    return datetime.now(UTC).astimezone(CHINA)


def fresh_opt_outs(con, settings: Settings) -> set[str]:
    """Members whose identifiers' latest marketing answer, over every consent partition landed so far,
    is a refusal — read from the landing zone, so answers newer than the marts count."""
    files = sorted(settings.landing_dir.glob("consent/events/dt=*/*.parquet"))
    if not files:
        return set()
    rows = con.execute(
        """
        with answers as (
            select id_type, id_value,
                last(granted order by event_time, granted desc) as granted
            from read_parquet($files, union_by_name = true)
            where scope = 'marketing'
            group by id_type, id_value
        )
        select distinct ids.member_id
        from answers inner join member_identifiers as ids using (id_type, id_value)
        where not answers.granted
        """,
        {"files": [str(f) for f in files]},
    ).fetchall()
    return {r[0] for r in rows}


class ConsentNotCurrentError(RuntimeError):
    """Consent answers up to the delivery date are not all landed, or landed after the last build for
    identifiers the warehouse cannot place yet: a send now could reach someone who refused."""


def require_current_consent(settings: Settings, as_of: date) -> None:
    """Refuse to send while consent could be newer than what the plan reads.

    Two ways an opt-out can be missed: its file sits in the channel folder for a day up to ``as_of`` that is
    not landed (a late second file, a changed file, a day never extracted or refused:
    ``pipeline.land_fresh_consent`` lands them right before a delivery); or it landed after the warehouse
    was built and names an identifier (say an openid seen for the first time) that data landed since will
    link to a member at the next build. ``fresh_opt_outs`` covers every landed answer whose identifier the
    warehouse already knows."""
    from memberflow.extract import pending_partitions

    consent = get_contract("consent", "events")
    late = pending_partitions(settings, settings.data_dir, until=as_of, contracts=[consent])
    if late:
        days = ", ".join(day.isoformat() for day, _ in late)
        raise ConsentNotCurrentError(
            f"consent.events holds answers up to {as_of} that are not landed yet (dt={days}: new, changed "
            f"or refused files under {settings.data_dir / 'consent' / 'events'}); nothing was sent. Land "
            f"them (`memberflow extract --table consent.events --date <day>`, or `memberflow build`), then "
            "deliver again"
        )
    unplaced = unbuilt_opt_outs(settings)
    if unplaced:
        raise ConsentNotCurrentError(
            f"{sum(unplaced.values()):,} marketing opt-out(s) landed after the last build for identifiers "
            f"that data landed since links to members (in {', '.join(sorted(unplaced))}); nothing was sent. "
            "Run `memberflow build` (or the transform DAG) so they reach their members, then deliver again"
        )


def unbuilt_opt_outs(settings: Settings) -> dict[str, int]:
    """Marketing refusals landed after the marts were published, for identifiers ``member_identifiers``
    does not hold but that other partitions landed since mention (the next build links them): consent
    partition folder -> refusals. A refusal from an identifier nothing else mentions (an SMS reply from a
    number no channel has sent) reaches nobody, built or not, and does not stop a delivery."""
    marker = published_marker(settings, "marts")
    if not marker.exists():
        return {}  # nothing built and gated yet: scoring and planning stop on their own
    built = datetime.fromisoformat(json.loads(marker.read_text())["published_at"]).timestamp()
    newer = [f for f in settings.landing_dir.glob("*/*/dt=*/*.parquet") if f.stat().st_mtime > built]
    consent = [
        f for f in newer if f.parent.parent.relative_to(settings.landing_dir).as_posix() == "consent/events"
    ]
    if not consent:
        return {}
    with read_warehouse(settings) as con:
        unknown = con.execute(
            """
            with answers as (
                select id_type, id_value, filename,
                    last(granted order by event_time, granted desc) as granted
                from read_parquet($files, union_by_name = true, filename = true)
                where scope = 'marketing'
                group by id_type, id_value, filename
            )
            select id_value, filename from answers
            anti join member_identifiers as ids using (id_type, id_value)
            where not granted
            """,
            {"files": [str(f) for f in consent]},
        ).fetchall()
    if not unknown:
        return {}
    mentioned = _values_in([f for f in newer if f not in consent])
    linked = Counter(Path(name).parent.name for value, name in unknown if value in mentioned)
    return dict(linked)


def _values_in(files: list[Path]) -> set[str]:
    """Every string value of the files, and each mini-program row's openid in the consent form
    ``platform:app_id:openid``."""
    import pyarrow.parquet as pq

    values: set[str] = set()
    for path in files:
        table = pq.read_table(path)
        for column in table.itercolumns():
            if pa.types.is_string(column.type):
                values.update(v for v in column.unique().to_pylist() if v)
        if {"platform", "app_id", "openid"} <= set(table.column_names):
            rows = zip(*(table[c].to_pylist() for c in ("platform", "app_id", "openid")), strict=True)
            values.update(f"{p}:{a}:{o}" for p, a, o in rows)
    return values


@dataclass
class Plan:
    as_of: date
    planned_at: datetime
    segments: list[Segment]
    frame: pl.DataFrame  # one row per member in a segment, with status and reason
    matched: dict[str, int]
    members: int
    # segments left out today because a model they use is critical in live monitoring: segment -> why
    paused: dict[str, str] = field(default_factory=dict)
    # segments ranked under their cap by a promoted uplift model instead of rank_by: segment -> model
    ranked_by: dict[str, str] = field(default_factory=dict)

    def summary(self) -> dict:
        by = self.frame.group_by("segment", "status", "reason").len().rows() if self.frame.height else []
        out = {}
        for seg in self.segments:
            rows = [r for r in by if r[0] == seg.name]
            out[seg.name] = {
                "channel": seg.channel,
                "priority": seg.priority,
                "matched": self.matched.get(seg.name, 0),
                "assigned": sum(r[3] for r in rows),
                "send": sum(r[3] for r in rows if r[1] == "send"),
                "already_sent": sum(r[3] for r in rows if r[1] == "already_sent"),
                "holdout": sum(r[3] for r in rows if r[1] == "holdout"),
                "suppressed": {r[2]: r[3] for r in rows if r[1] == "suppressed"},
            }
            if seg.name in self.ranked_by:
                out[seg.name]["ranked_by"] = self.ranked_by[seg.name]
            if seg.name in self.paused:
                out[seg.name]["paused"] = self.paused[seg.name]
        return out


def plan(
    settings: Settings,
    as_of: date,
    now: datetime | None = None,
    segments: list[Segment] | None = None,
    config: OutreachConfig | None = None,
) -> Plan:
    now = now or now_china()
    segments = segments if segments is not None else load_segments()
    config = config or OutreachConfig.load()
    paused = paused_segments(settings, as_of, segments)
    with read_warehouse(settings) as con:
        profiles = kept_profiles(settings, con, as_of)
        opted_out = fresh_opt_outs(con, settings)
    assignment = assign(profiles, [s for s in segments if s.name not in paused])
    ranked, ranked_by = rank_frame(settings, assignment.frame, segments)
    ranked = with_expected_value(ranked, segments, ranked_by)
    ledger = Ledger.open(settings)
    try:
        history = ledger.history(as_of, now, {s.name: s.message for s in segments})
    finally:
        ledger.close()
    frame = decide(
        ranked,
        {s.name: s.daily_cap for s in segments},
        history,
        as_of,
        now,
        fresh_opt_outs=opted_out,
        caps=config.caps,
        frequency={s.name: frequency_of(s, config.caps) for s in segments},
    )
    frame = with_reasons(settings, as_of, frame, segments)
    return Plan(as_of, now, segments, frame, assignment.matched, profiles.height, paused, ranked_by)


def paused_segments(settings: Settings, as_of: date, segments: list[Segment]) -> dict[str, str]:
    """Segments whose rules or ranking use a model that live monitoring found critical (``ml.monitor``):
    segment -> why. They are left out of the day's plan until the model is retrained."""
    from ml.monitor import paused_models

    models = paused_models(settings, as_of)
    return {
        s.name: f"{m} paused by monitoring: {models[m]}" for s in segments for m in s.models if m in models
    }


# What the ledger keeps of each send it records.
LEDGER_COLUMNS = [
    *("idempotency_key", "segment", "member_id", "channel", "phone_token"),
    *("message", "kind", "cycle"),
]


def frequency_of(segment: Segment, caps: Caps) -> Frequency:
    """A segment's cooldown (its own, or outreach.yml's) and once-per rule."""
    return Frequency(segment.cooldown_days or caps.cooldown_days, segment.once_per)


# The statuses whose members get reasons while planning (with_reasons).
EXPLAINED_STATUSES = ("send", "already_sent")


def with_reasons(
    settings: Settings, as_of: date, frame: pl.DataFrame, segments: list[Segment]
) -> pl.DataFrame:
    """Explain the scores of the segment members the plan acts on (ml.score.explain: only those not
    explained yet) and put the stored reasons in the frame's ``<model>_reasons`` columns.

    Acted on: sent (or already sent). Held-out and suppressed members are not explained: the caps bound
    what is sent each day, while the held-out share of the matches and the suppressed rows grow with the
    brand (at 1M members: 6,400 sends beside 66,649 held out and 590,868 capped), and TreeSHAP costs a few
    milliseconds per member and model at 800 trees. A member who is sent on a later day is explained then;
    ``memberflow score --reasons`` explains everyone. Each segment needs its own model's reasons; a
    segment without one (win-back) shows the first model's, in MODELS order, that has any (pick_reasons),
    so its members are explained one model at a time, and only those whose earlier models gave no reason
    go on to the next (at 1M members, 3,000 win-back sends were 4,214 member-model pairs explained, each
    of them TreeSHAP over hundreds of trees, when every model was explained for all of them)."""
    if frame.is_empty():
        return frame
    by_segment = {s.name: reasons_model(s) for s in segments}
    wanted: dict[str, set[str]] = {m: set() for m in MODELS}
    first_with_reasons: set[str] = set()  # the members of segments without a model of their own
    acted_on = frame.filter(pl.col("status").is_in(EXPLAINED_STATUSES))
    for (segment,), members in acted_on.group_by("segment"):
        model = by_segment.get(segment)
        if model:
            wanted[model].update(members["member_id"].to_list())
        else:
            first_with_reasons.update(members["member_id"].to_list())
    explain(settings, as_of, wanted)
    for m in MODELS:
        if not first_with_reasons:
            break
        explain(settings, as_of, {m: first_with_reasons})
        first_with_reasons -= set(_stored_reasons(settings, as_of, first_with_reasons, m)["member_id"])
    ids = frame["member_id"].unique()
    stored = _stored_reasons(settings, as_of, ids.to_list())
    reasons = ids.to_frame()
    for m in MODELS:
        of_model = stored.filter(pl.col("model") == m).select(
            "member_id",
            pl.col("reasons").alias(f"{m}_reasons"),
            pl.col("reasons_zh").alias(f"{m}_reasons_zh"),
        )
        reasons = reasons.join(of_model, on="member_id", how="left")
    columns = [f"{m}_reasons{suffix}" for m in MODELS for suffix in ("", "_zh")]
    return frame.drop([c for c in columns if c in frame.columns]).join(reasons, on="member_id", how="left")


def _stored_reasons(
    settings: Settings, as_of: date, members: Iterable[str], model: str | None = None
) -> pl.DataFrame:
    """member_id, model, reasons, reasons_zh of the members' scores on ``as_of`` (of ``model`` only, with
    at least one reason, when given)."""
    with read_warehouse(settings) as con:
        con.register("wanted", pa.table({"member_id": pa.array(sorted(set(members)), pa.string())}))
        has_zh = bool(
            con.execute(
                "select count(*) from duckdb_columns() where table_name = 'member_scores' "
                "and column_name = 'reasons_zh'"
            ).fetchall()[0][0]
        )
        zh = "reasons_zh" if has_zh else "null::varchar[]"  # a warehouse scored before Chinese reasons
        only = " and model = ? and len(reasons) > 0" if model else ""
        return con.sql(
            f"select member_id, model, reasons, {zh} as reasons_zh "
            f"from member_scores join wanted using (member_id) where as_of = ?{only}",
            params=[as_of, model] if model else [as_of],
        ).pl()


def write_memberships(settings: Settings, planned: Plan) -> int:
    """Replace the date's rows of ``segment_memberships`` with the plan, and its staff queues
    (``staff_queue``: the WeCom members sent or to send, per staff owner)."""
    cols = [
        "member_id", "segment", "channel", "priority", "status", "reason", "holdout", "health_based",
        "message", "outcome", "outcome_days",
    ]  # fmt: skip
    table = (
        planned.frame.select(*cols, "idempotency_key")
        .with_columns(as_of=pl.lit(planned.as_of), planned_at=pl.lit(planned.planned_at.replace(tzinfo=None)))
        .to_arrow()
    )
    written = replace_rows(
        settings, MEMBERSHIPS_DDL, "segment_memberships", "as_of = ?", [planned.as_of], table
    )
    by_name = {s.name: s for s in planned.segments}
    queues = queue_table(
        planned.frame,
        planned.as_of,
        planned.planned_at,
        lambda r, lang: member_reasons(r, by_name[r["segment"]], lang),
    )
    replace_rows(settings, QUEUE_DDL, "staff_queue", "as_of = ?", [planned.as_of], queues)
    return written


def reasons_model(segment: Segment) -> str | None:
    """The model whose reasons explain a segment: the first one its ranking or rules use."""
    return segment.models[0] if segment.models else None


def pick_reasons(by_model: dict[str, list[str] | None], model: str | None) -> list[str]:
    """The reason sentences shown with a member: ``model``'s, or, for a segment without a model of its own
    (win-back), the first model's in MODELS order that has any. Messages, the ops API's member pages and
    its exports all choose with this rule, so ops see the reasons the message carried."""
    for m in [model] if model else MODELS:
        if by_model.get(m):
            return list(by_model[m])
    return []


def member_reasons(row: dict, segment: Segment, lang: str = "en") -> list[str]:
    """The reasons of a profile row (``<model>_reasons`` columns; ``<model>_reasons_zh`` in Chinese) for a
    member in ``segment``. Reasons stored before there were Chinese ones come in English."""
    english = pick_reasons({m: row.get(f"{m}_reasons") for m in MODELS}, reasons_model(segment))
    if lang != "zh":
        return english
    return pick_reasons({m: row.get(f"{m}_reasons_zh") for m in MODELS}, reasons_model(segment)) or english


ADDRESS_COLUMNS = ("external_userid", "staff_owner", "phone_token", "phone_masked", "unionid")


def messages_for(planned: Plan, keys: set[str], in_doubt: set[str] = frozenset()) -> list[Message]:
    by_name = {s.name: s for s in planned.segments}
    needed = ["idempotency_key", "member_id", "segment", *ADDRESS_COLUMNS, *(f"{m}_reasons" for m in MODELS)]
    rows = planned.frame.filter(pl.col("idempotency_key").is_in(list(keys))).select(
        [c for c in needed if c in planned.frame.columns]
    )
    out = []
    for r in rows.iter_rows(named=True):
        seg = by_name[r["segment"]]
        out.append(
            Message(
                key=r["idempotency_key"],
                member_id=r["member_id"],
                segment=seg.name,
                channel=seg.channel,
                as_of=planned.as_of.isoformat(),
                message=seg.message,
                reasons=member_reasons(r, seg),
                address={c: r.get(c) for c in ADDRESS_COLUMNS},
                in_doubt=r["idempotency_key"] in in_doubt,
            )
        )
    return out


@dataclass
class DeliveryReport:
    as_of: str
    run_id: str
    dry_run: bool
    started_at: str
    finished_at: str = ""
    members: int = 0
    segments: dict = field(default_factory=dict)
    sent: int = 0
    sent_by_channel: dict[str, int] = field(default_factory=dict)
    retried: int = 0  # sends decided by an earlier run of the date, attempted again in this one
    retried_requests: int = 0  # requests repeated within this run (429, 5xx, timeouts)
    cancelled: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # error -> rows
    suppressed: dict[str, int] = field(default_factory=dict)  # reason -> members
    holdout: int = 0
    already_sent: int = 0
    report_path: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def deliver(
    settings: Settings,
    as_of: date,
    dry_run: bool = False,
    now: datetime | None = None,
    config: OutreachConfig | None = None,
    segments: list[Segment] | None = None,
    sleep=None,
) -> DeliveryReport:
    """Plan, record, send what is new or unsettled, and report. A dry run plans and reports only.

    One delivery at a time per workspace (a lock file): two runs planning from the same ledger state would
    both send what each thinks is new."""
    with delivery_lock(settings):
        return _deliver(settings, as_of, dry_run, now, config, segments, sleep)


@contextlib.contextmanager
def delivery_lock(settings: Settings) -> Iterator[None]:
    folder = settings.home / "outreach"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".deliver.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _deliver(settings, as_of, dry_run, now, config, segments, sleep) -> DeliveryReport:
    if not dry_run:
        require_published(settings, "marts")  # not mid-build, nor after a key rotation until rebuilt
        require_current_consent(settings, as_of)
    config = config or OutreachConfig.load()
    clock = (lambda: now) if now else now_china
    started = clock()
    planned = plan(settings, as_of, started, segments, config)
    ledger = Ledger.open(settings)
    try:
        run_id = ledger.start_run(as_of, started, dry_run)
        report = DeliveryReport(
            as_of.isoformat(), run_id, dry_run, started.isoformat(), members=planned.members
        )
        report.segments = planned.summary()
        frame = planned.frame
        counts = Counter(zip(frame["status"].to_list(), frame["reason"].to_list(), strict=True))
        report.suppressed = {r: n for (s, r), n in sorted(counts.items(), key=str) if s == "suppressed"}
        report.holdout = counts.get(("holdout", None), 0)
        report.already_sent = counts.get(("already_sent", None), 0)
        if not dry_run:
            write_memberships(settings, planned)
            unsettled = ledger.unsettled(as_of)
            to_send = frame.filter(pl.col("status") == "send")
            wanted = set(to_send["idempotency_key"].to_list())
            status_of = dict(zip(frame["idempotency_key"].to_list(), frame["reason"].to_list(), strict=True))
            report.cancelled = ledger.cancel(
                run_id,
                clock(),
                {k: status_of.get(k) or "membership_changed" for k in unsettled if k not in wanted},
            )
            report.retried = len(wanted & set(unsettled))
            ledger.decide(
                run_id,
                clock(),
                to_send.select(LEDGER_COLUMNS).with_columns(as_of=pl.lit(as_of.isoformat())).to_dicts(),
            )
            messages = messages_for(planned, wanted, ledger.in_doubt(as_of))
            by_channel: dict[str, list[Message]] = {}
            for m in messages:
                by_channel.setdefault(m.channel, []).append(m)
            for channel, batch in sorted(by_channel.items()):
                try:
                    connector = make_connector(channel, config, settings, clock)
                except FatalError as exc:
                    ledger.settle(run_id, clock(), [Outcome(m.key, False, "fatal", str(exc)) for m in batch])
                    report.failed[str(exc)] = report.failed.get(str(exc), 0) + len(batch)
                    continue
                try:
                    stats = dispatch(connector, batch, ledger, run_id, clock, sleep=sleep or time.sleep)
                finally:
                    connector.close()
                report.sent += stats.sent
                report.sent_by_channel[channel] = stats.sent
                report.retried_requests += stats.retried_requests
                for error, n in stats.failed.items():
                    report.failed[error] = report.failed.get(error, 0) + n
        report.finished_at = clock().isoformat()
        _write_report(settings, report)
        ledger.finish_run(run_id, clock(), report.to_dict())
        if not dry_run:
            mirror_ledger(settings, ledger)
    finally:
        ledger.close()
    return report


def _write_report(settings: Settings, report: DeliveryReport) -> Path:
    folder = settings.reports_dir / "delivery" / report.as_of
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{report.run_id}.json"
    report.report_path = str(path)
    path.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    return path


def mirror_ledger(settings: Settings, ledger: Ledger) -> int:
    """Copy the ledger's deliveries into the warehouse table ``delivery_ledger`` (for readers)."""
    rows = ledger.rows()
    for r in rows:
        r.pop("phone_token", None)
    schema = pa.schema(
        [
            ("idempotency_key", pa.string()), ("as_of", pa.string()), ("segment", pa.string()),
            ("member_id", pa.string()), ("channel", pa.string()), ("status", pa.string()),
            ("attempts", pa.int64()), ("error_class", pa.string()), ("last_error", pa.string()),
            ("external_id", pa.string()), ("decided_day", pa.string()), ("decided_run", pa.string()),
            ("last_run", pa.string()), ("updated_at", pa.string()), ("sent_at", pa.string()),
        ]
    )  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=schema)
    return replace_rows(settings, LEDGER_DDL, "delivery_ledger", "true", [], table)
