"""Members' tags back into WeCom as corp tags on their contacts, sending only what changed (DESIGN §7a).

Staff see a member's lifecycle stage, value tier, interests and the product due soon as corp tags on the
WeCom contact, where they work. Each day ``sync_tags`` works out the tags each contact should carry and
compares them with what the tag ledger says was set last time. Only contacts whose tags changed get a
``mark_tag`` call, adding and removing those tags. Tags are managed in groups of our own
(``memberflow·生命周期`` and so on); tags staff add by hand in other groups are never touched.

Health data: an interest or a due product in a health category is tagged only for members who gave
health-data consent. Without it, the tag is removed, or never set.

The calls go through the connector framework: ``dispatch`` batches them, spaces them out under the channel's
rate limit and retries with backoff, with the tag ledger (SQLite in the workspace) in place of the delivery
ledger. A ``mark_tag`` repeated after a lost answer changes nothing, so a call in doubt is simply retried. A
change that still fails is recorded with its error, and the next run tries it again, because the difference
is still there.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import polars as pl

from memberflow.core.settings import Settings
from memberflow.core.vocab import CATEGORIES, LABELS
from memberflow.outreach.connectors import (
    FatalError,
    Message,
    Outcome,
    OutreachConfig,
    WecomConnector,
    dispatch,
    with_retries,
)
from memberflow.outreach.ledger import DispatchLedger
from memberflow.outreach.scripts import due_soon, may_show

# Our tag groups in WeCom: group key -> the group's name there
GROUPS = {
    "lifecycle": "memberflow·生命周期",
    "value_tier": "memberflow·价值层级",
    "interest": "memberflow·兴趣",
    "due": "memberflow·待补货",
}
HEALTH_INTERESTS = {c.interest for c in CATEGORIES.values() if c.health_related}


def tag_names() -> dict[str, list[str]]:
    """Every tag of our groups, by group name (what ``ensure_tags`` creates in WeCom)."""
    return {
        GROUPS["lifecycle"]: [zh for zh, _ in LABELS["lifecycle"].values()],
        GROUPS["value_tier"]: [zh for zh, _ in LABELS["value_tier"].values()],
        GROUPS["interest"]: [zh for zh, _ in LABELS["interest"].values()],
        GROUPS["due"]: [c.label_zh for c in CATEGORIES.values() if not c.is_device],
    }


def desired_tags(profiles: pl.DataFrame) -> dict[tuple[str, str], set[tuple[str, str]]]:
    """(staff userid, external_userid) -> the (group name, tag name) pairs the contact should carry, for
    every member with a WeCom contact of their staff owner (``segments.member_profiles`` rows)."""
    out: dict[tuple[str, str], set[tuple[str, str]]] = {}
    rows = profiles.filter(pl.col("external_userid").is_not_null() & pl.col("staff_owner").is_not_null())
    for r in rows.select(
        "staff_owner", "external_userid", "lifecycle_stage", "value_tier", "interests", "next_due_category",
        "days_until_next_due", "health_consent",
    ).iter_rows(named=True):  # fmt: skip
        tags: set[tuple[str, str]] = set()
        health = bool(r["health_consent"])
        if r["lifecycle_stage"] in LABELS["lifecycle"]:
            tags.add((GROUPS["lifecycle"], LABELS["lifecycle"][r["lifecycle_stage"]][0]))
        if r["value_tier"] in LABELS["value_tier"]:
            tags.add((GROUPS["value_tier"], LABELS["value_tier"][r["value_tier"]][0]))
        for interest in r["interests"] or []:
            if interest in LABELS["interest"] and (health or interest not in HEALTH_INTERESTS):
                tags.add((GROUPS["interest"], LABELS["interest"][interest][0]))
        due, days = r["next_due_category"], r["days_until_next_due"]
        if due_soon(due, days) and may_show(due, health):
            tags.add((GROUPS["due"], CATEGORIES[due].label_zh))
        out[(r["staff_owner"], r["external_userid"])] = tags
    return out


# ------------------------------------------------------------------------------------------ the ledger

SCHEMA = """
create table if not exists corp_tags (
    group_name text not null,
    tag_name text not null,
    tag_id text not null,
    primary key (group_name, tag_name)
);
create table if not exists contact_tags (
    userid text not null,
    external_userid text not null,
    tag_id text not null,
    synced_at text not null,
    primary key (userid, external_userid, tag_id)
);
create table if not exists changes (
    change_key text primary key,
    run_id text not null,
    userid text not null,
    external_userid text not null,
    add_tags text not null,
    remove_tags text not null,
    status text not null,
    attempts integer not null default 0,
    error_class text,
    last_error text,
    updated_at text not null
);
create table if not exists attempts (
    run_id text not null,
    change_key text not null,
    attempt integer not null,
    at text not null,
    outcome text not null,
    error_class text,
    detail text
);
create table if not exists runs (
    run_id text primary key,
    as_of text not null,
    started_at text not null,
    finished_at text,
    report text
);
"""


def tag_ledger_path(settings: Settings) -> Path:
    return settings.home / "outreach" / "tags.sqlite"


class TagLedger(DispatchLedger):
    """What we last set on each contact, every change attempted and its outcome. It answers ``dispatch``
    like the delivery ledger (``mark_sending``, ``record_attempt``, ``settle``)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, SCHEMA)

    @classmethod
    def open(cls, settings: Settings) -> TagLedger:
        return cls(tag_ledger_path(settings))

    def corp_tags(self) -> dict[tuple[str, str], str]:
        return {
            (g, t): i for g, t, i in self._con.execute("select group_name, tag_name, tag_id from corp_tags")
        }

    def remember_corp_tags(self, ids: dict[tuple[str, str], str]) -> None:
        with self._tx() as con:
            con.execute("delete from corp_tags")
            con.executemany(
                "insert into corp_tags values (?, ?, ?)", [(g, t, i) for (g, t), i in ids.items()]
            )

    def synced(self) -> dict[tuple[str, str], set[str]]:
        out: dict[tuple[str, str], set[str]] = {}
        for userid, ext, tag in self._con.execute("select userid, external_userid, tag_id from contact_tags"):
            out.setdefault((userid, ext), set()).add(tag)
        return out

    def start_run(self, as_of: date, now: datetime) -> str:
        run_id = f"{now.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        with self._tx() as con:
            con.execute(
                "insert into runs (run_id, as_of, started_at) values (?, ?, ?)",
                (run_id, str(as_of), str(now)),
            )
        return run_id

    def finish_run(self, run_id: str, now: datetime, report: dict) -> None:
        with self._tx() as con:
            con.execute(
                "update runs set finished_at = ?, report = ? where run_id = ?",
                (now.isoformat(), json.dumps(report, default=str), run_id),
            )

    def decide(self, run_id: str, now: datetime, changes: list[TagChange]) -> None:
        with self._tx() as con:
            con.executemany(
                "insert into changes (change_key, run_id, userid, external_userid, add_tags, remove_tags, "
                "status, updated_at) values (?, ?, ?, ?, ?, ?, 'pending', ?) "
                "on conflict (change_key) do update "
                "set run_id = excluded.run_id, status = 'pending', updated_at = excluded.updated_at",
                [
                    (c.key, run_id, c.userid, c.external_userid, json.dumps(sorted(c.add)),
                     json.dumps(sorted(c.remove)), now.isoformat())
                    for c in changes
                ],
            )  # fmt: skip

    # --- what dispatch calls ---
    def mark_sending(self, run_id: str, now: datetime, keys: list[str]) -> None:
        with self._tx() as con:
            con.executemany(
                "update changes set status = 'sending', attempts = attempts + 1, updated_at = ? "
                "where change_key = ?",
                [(now.isoformat(), k) for k in keys],
            )

    def settle(self, run_id: str, now: datetime, outcomes: Iterable[Outcome]) -> None:
        """A change applied moves the contact's synced tags; one that failed keeps the old ones (the next
        run finds the same difference and tries again)."""
        with self._tx() as con:
            for o in outcomes:
                con.execute(
                    "update changes set status = ?, error_class = ?, last_error = ?, updated_at = ? "
                    "where change_key = ?",
                    ("applied" if o.ok else "failed", o.error_class, o.error, now.isoformat(), o.key),
                )
                if not o.ok:
                    continue
                userid, ext, add, remove = con.execute(
                    "select userid, external_userid, add_tags, remove_tags from changes where change_key = ?",
                    (o.key,),
                ).fetchone()
                con.executemany(
                    "delete from contact_tags where userid = ? and external_userid = ? and tag_id = ?",
                    [(userid, ext, t) for t in json.loads(remove)],
                )
                con.executemany(
                    "insert or ignore into contact_tags values (?, ?, ?, ?)",
                    [(userid, ext, t, now.isoformat()) for t in json.loads(add)],
                )

    def rows(self) -> list[dict]:
        cur = self._con.execute("select * from changes order by updated_at")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


# ----------------------------------------------------------------------------------- the WeCom calls


@dataclass(frozen=True)
class TagChange:
    userid: str
    external_userid: str
    add: frozenset[str]
    remove: frozenset[str]

    @property
    def key(self) -> str:
        """One key per contact and change: the same change retried keeps its key, a new one gets another."""
        digest = hashlib.blake2b(
            json.dumps([sorted(self.add), sorted(self.remove)]).encode(), digest_size=6
        ).hexdigest()
        return f"tags/{self.userid}/{self.external_userid}/{digest}"

    def message(self, as_of: date) -> Message:
        return Message(
            key=self.key,
            member_id="",
            segment="tags",
            channel="wecom",
            as_of=as_of.isoformat(),
            message="mark_tag",
            address={
                "userid": self.userid,
                "external_userid": self.external_userid,
                "add_tag": sorted(self.add),
                "remove_tag": sorted(self.remove),
            },
        )


WECOM_NOT_A_CONTACT = {84061, 40096}  # no relationship between the staff member and the customer
WECOM_UNKNOWN_TAG = 40068
NOT_A_CONTACT = "not a contact of this staff member any more"
UNKNOWN_TAG = "a tag is gone from WeCom (deleted there?): tags are looked up again on the next run"


class WecomTagConnector(WecomConnector):
    """WeCom's corp-tag API: list and create our tags, and ``mark_tag`` one contact per request."""

    name = "wecom"

    def batches(self, messages: list[Message]) -> Iterator[list[Message]]:
        for m in messages:  # mark_tag takes one contact
            yield [m]

    def corp_tags(self) -> tuple[dict[tuple[str, str], str], dict[str, str]]:
        """WeCom's corp tags: (group name, tag name) -> tag id, and group name -> group id."""
        groups = self._call("get_corp_tag_list", {}).get("tag_group", [])
        tags = {
            (g["group_name"], t["name"]): t["id"]
            for g in groups
            for t in g.get("tag", [])
            if not t.get("deleted")
        }
        return tags, {g["group_name"]: g["group_id"] for g in groups}

    def ensure_tags(self, wanted: dict[str, list[str]]) -> dict[tuple[str, str], str]:
        """(group name, tag name) -> tag id for every tag of ``wanted``, creating the missing ones."""
        have, group_ids = self.corp_tags()
        for group, names in wanted.items():
            missing = [n for n in names if (group, n) not in have]
            if not missing:
                continue
            body: dict = {"tag": [{"name": n} for n in missing]}
            if group in group_ids:
                body["group_id"] = group_ids[group]
            else:
                body["group_name"] = group
            created = self._call("add_corp_tag", body).get("tag_group", {})
            for t in created.get("tag", []):
                have[(group, t["name"])] = t["id"]
        return have

    def send_batch(self, batch: list[Message]) -> list[Outcome]:
        m = batch[0]
        body = {k: m.address[k] for k in ("userid", "external_userid", "add_tag", "remove_tag")}
        try:
            self._call("mark_tag", body)
        except FatalError as exc:
            code = exc.errcode
            if code in WECOM_NOT_A_CONTACT:
                return [Outcome(m.key, False, "fatal", NOT_A_CONTACT)]
            if code == WECOM_UNKNOWN_TAG:
                return [Outcome(m.key, False, "fatal", UNKNOWN_TAG)]
            raise
        return [Outcome(m.key, True)]


# ------------------------------------------------------------------------------------------- the sync


@dataclass
class TagSyncReport:
    as_of: str
    run_id: str = ""
    contacts: int = 0  # contacts whose tags we manage
    changed: int = 0  # contacts with a difference to send
    applied: int = 0
    tags_added: int = 0
    tags_removed: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    retried_requests: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def plan_changes(
    desired: dict[tuple[str, str], set[tuple[str, str]]],
    synced: dict[tuple[str, str], set[str]],
    ids: dict[tuple[str, str], str],
) -> list[TagChange]:
    """Per contact, the tags to add and to remove so WeCom holds ``desired`` (contacts we tagged before
    that are no longer anyone's contact lose our tags)."""
    changes = []
    for contact in sorted(set(desired) | set(synced)):
        want = {ids[t] for t in desired.get(contact, set())}
        have = synced.get(contact, set())
        if want != have:
            changes.append(TagChange(contact[0], contact[1], frozenset(want - have), frozenset(have - want)))
    return changes


def sync_tags(
    settings: Settings,
    as_of: date,
    now: datetime,
    config: OutreachConfig | None = None,
    dry_run: bool = False,
    sleep=None,
) -> TagSyncReport:
    """Bring our corp tags on every contact in line with the members' tags on ``as_of``."""
    import time

    from memberflow.segments import kept_profiles
    from memberflow.warehouse import read_warehouse

    config = config or OutreachConfig.load()
    with read_warehouse(settings) as con:
        profiles = kept_profiles(settings, con, as_of)
    desired = desired_tags(profiles)
    report = TagSyncReport(as_of.isoformat(), contacts=len(desired))
    sleep = sleep or time.sleep
    ledger = TagLedger.open(settings)
    connector = WecomTagConnector(config.channels["wecom_tags"], settings, lambda: now)
    try:
        ids = _tag_ids(connector, ledger, sleep)
        changes = plan_changes(desired, ledger.synced(), ids)
        report.changed = len(changes)
        report.tags_added = sum(len(c.add) for c in changes)
        report.tags_removed = sum(len(c.remove) for c in changes)
        if dry_run or not changes:
            return report
        report.run_id = ledger.start_run(as_of, now)
        ledger.decide(report.run_id, now, changes)
        stats = dispatch(
            connector, [c.message(as_of) for c in changes], ledger, report.run_id, lambda: now, sleep=sleep
        )
        report.applied = stats.sent
        report.failed = stats.failed
        report.requests = stats.requests
        report.retried_requests = stats.retried_requests
        if UNKNOWN_TAG in report.failed:  # someone deleted our tags in WeCom: look them up again next run
            ledger.remember_corp_tags({})
        ledger.finish_run(report.run_id, now, report.to_dict())
    finally:
        connector.close()
        ledger.close()
    return report


def _tag_ids(connector: WecomTagConnector, ledger: TagLedger, sleep) -> dict[tuple[str, str], str]:
    """Our tags' ids: from the ledger when it knows them all, else asked of WeCom (creating what is
    missing) and remembered."""
    wanted = tag_names()
    known = ledger.corp_tags()
    if all((g, t) in known for g, names in wanted.items() for t in names):
        return known
    ids = with_retries(connector.config, lambda: connector.ensure_tags(wanted), sleep)
    ledger.remember_corp_tags(ids)
    return ids
