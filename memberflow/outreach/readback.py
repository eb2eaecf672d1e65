"""WeCom's send results read back into the staff queues.

A WeCom segment's members go out as one mass-message task per staff member; nothing reaches a customer until
the staff member confirms the task on their phone. ``get_groupmsg_send_result`` tells, per recipient, what
became of it: 0 still waiting, 1 sent (with the time), 2 not the staff member's contact any more, 3 the
customer already got another mass message that day. ``read_back`` asks WeCom about the tasks behind the
queue items of the last few days that are not settled yet and records the answers in the queue log:

- every answer (``wecom_results``: the item's task, status, send time and when it was asked);
- a mark where the answer settles the item and nobody marked it by hand: done for 1, skipped for 2
  (``not_a_contact``) and 3 (``wecom_daily_limit``), by the actor ``WeCom``. A staff member's own mark is
  never overwritten: they may have served the member another way.

A rerun asks nothing about items already settled, and writes a mark only when an answer changed. It reads
the warehouse and the delivery ledger and writes only the queue log, so it may run while ops read the page.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from memberflow.core.settings import Settings
from memberflow.outreach.connectors import OutreachConfig, WecomConnector, with_retries
from memberflow.outreach.ledger import Ledger
from memberflow.outreach.queue import WECOM_SETTLES, QueueLog
from memberflow.outreach.suppression import CHINA
from memberflow.warehouse import read_warehouse, table_names

# get_groupmsg_send_result's status -> the name memberflow gives it
SEND_STATUS = {0: "waiting", 1: "sent", 2: "not_a_contact", 3: "wecom_daily_limit"}
DAYS_BACK = 3  # a task staff did not confirm within three days is not coming


@dataclass
class ReadBackReport:
    as_of: str
    items: int = 0  # queue items of the window with a WeCom task
    asked: int = 0  # of them, not settled before this run
    tasks: int = 0  # tasks asked about
    requests: int = 0
    results: dict[str, int] = field(default_factory=dict)  # status -> items, after this run
    marked: int = 0  # items this run marked done or skipped
    kept_staff_marks: int = 0  # items WeCom settled that their staff member had marked themselves
    unmatched: int = 0  # items whose customer is missing from their task's results

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def read_back(
    settings: Settings,
    as_of: date,
    config: OutreachConfig | None = None,
    days: int = DAYS_BACK,
    sleep: Callable[[float], None] = time.sleep,
) -> ReadBackReport:
    """Ask WeCom what became of the queue items of ``as_of`` and the ``days - 1`` days before it."""
    report = ReadBackReport(as_of.isoformat())
    items = _queued_items(settings, as_of - timedelta(days=days - 1), as_of)
    if not items:
        return report
    log = QueueLog.open(settings)
    known = log.wecom_results(list(items))
    report.items = len(items)
    todo = {k: v for k, v in items.items() if known.get(k, {}).get("status") not in WECOM_SETTLES}
    report.asked = len(todo)
    tasks: dict[tuple[str, str], list[str]] = {}
    for key, item in todo.items():
        tasks.setdefault((item["msgid"], item["staff_owner"]), []).append(key)
    if not tasks:  # everything settled: nothing to ask WeCom
        report.results = _count(items, {}, known)
        return report
    config = config or OutreachConfig.load()
    channel = config.channels["wecom"]
    connector = WecomConnector(channel, settings, lambda: datetime.now(UTC))
    spacing = 1 / channel.rate_per_second if channel.rate_per_second else 0.0
    answers: dict[str, dict] = {}
    try:
        for (msgid, sender), keys in sorted(tasks.items()):
            sent = with_retries(channel, lambda m=msgid, s=sender: connector.send_results(m, s), sleep)
            report.tasks += 1
            for key in keys:
                found = sent.get(items[key]["external_userid"])
                if found is None:
                    report.unmatched += 1
                    continue
                status, send_time = found
                answers[key] = {
                    "msgid": msgid,
                    "status": SEND_STATUS.get(status, f"status_{status}"),
                    "sent_at": _china_time(send_time),
                }
            sleep(spacing)
    finally:
        report.requests = connector.requests_made
        connector.close()
    report.marked, report.kept_staff_marks = log.record_wecom_results(
        {k: {**items[k], **a} for k, a in answers.items()}
    )
    report.results = _count(items, answers, known)
    return report


def _count(items: dict, answers: dict, known: dict) -> dict[str, int]:
    """Items per WeCom status after a run: this run's answer, else the last one kept."""
    out: dict[str, int] = {}
    for key in items:
        status = answers.get(key, known.get(key, {})).get("status", "unknown")
        out[status] = out.get(status, 0) + 1
    return out


def _queued_items(settings: Settings, first: date, last: date) -> dict[str, dict]:
    """idempotency key -> the queue item (day, staff, member, segment, contact) and its task's msgid, for
    the items of the days whose WeCom task was created."""
    with read_warehouse(settings) as con:
        if "staff_queue" not in table_names(con):
            return {}
        rows = con.execute(
            "select idempotency_key, as_of, staff_owner, member_id, segment, external_userid "
            "from staff_queue where as_of between ? and ? and external_userid is not null",
            [first, last],
        ).fetchall()
    items = {
        r[0]: dict(zip(("idempotency_key", "as_of", "staff_owner", "member_id", "segment", "external_userid"),
                       r, strict=True))
        for r in rows
    }  # fmt: skip
    ledger = Ledger.open(settings)
    try:
        msgids = ledger.task_ids(list(items))
    finally:
        ledger.close()
    return {k: {**v, "msgid": msgids[k]} for k, v in items.items() if k in msgids}


def _china_time(epoch: int | None) -> str | None:
    if not epoch:
        return None
    return datetime.fromtimestamp(int(epoch), CHINA).isoformat(timespec="seconds")
