"""
### deliver_segments

Turns the day's scores into outreach. Runs when `warehouse.member_scores` is updated (after scoring) and
again every morning at 09:30 China time, so SMS held back by quiet hours (21:00–08:00) and sends that
failed go out the same day.

1. `delivery_date`: the date of the published scores.
2. `land_consent`: lands the consent partitions up to that date that are new or changed in the channel
   folder (the day's own, as far as it has arrived), so an opt-out given this morning, or added late to a
   landed day, counts.
3. `build_segments`: every member into at most one segment (rules in `memberflow/segments.yml`, highest
   priority wins), holdouts, and suppression with a reason (opt-out, health consent, contact caps, quiet
   hours, segment caps); the plan is written to `segment_memberships`.
4. `quality_gate`: Great Expectations on the plan (gate `segments`): one segment per member, caps kept,
   holdout shares plausible, nobody who opted out is sent, no segment explosion.
5. `deliver`: refuses while consent is not current (a consent file still unlanded, or an opt-out landed
   since the last build for an identifier only the next build links), plans again right before sending
   (an opt-out that landed since still wins), sends only what
   is new or still unsettled in the delivery ledger, through the file, webhook, WeCom and SMS connectors,
   and writes the run's report. Each message carries the idempotency key (segment, member, date): reruns and
   retries never deliver twice.
6. `sync_tags` (after `deliver`): members' lifecycle stage, value tier, interests and the product due soon
   as WeCom corp tags on their contacts, only what changed since the last sync.
7. `read_back` (after `deliver`): what WeCom says became of the last three days' queued messages
   (sent by the staff member, no longer a contact, over WeCom's daily limit) settles the queue items
   nobody marked by hand. The morning run picks up what staff confirmed since the evening before.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, task

from memberflow.assets import MEMBER_SCORES, SEGMENT_DELIVERIES, WAREHOUSE_POOL
from memberflow.core.settings import schedule_start

CHINA = "Asia/Shanghai"


@task
def delivery_date() -> str:
    """The date the published scores are for."""
    from airflow.sdk.exceptions import AirflowFailException

    from memberflow.core.settings import get_settings
    from memberflow.warehouse import NotPublishedError, require_published

    try:
        return require_published(get_settings(), "scores")["date"]
    except NotPublishedError as exc:
        raise AirflowFailException(str(exc)) from exc


@task
def land_consent(as_of: str) -> str:
    """Land the consent answers up to the delivery date that are new or changed in the channel folder."""
    import logging
    from datetime import date

    from memberflow.core.settings import apply_privacy_defaults, get_settings
    from memberflow.pipeline import land_fresh_consent

    apply_privacy_defaults()
    run = land_fresh_consent(get_settings(), date.fromisoformat(as_of))
    for problem in run.errors.values():  # deliver then refuses, naming the days
        logging.getLogger(__name__).warning("consent not landed: %s", problem)
    return as_of


@task
def build_segments(as_of: str) -> dict:
    from datetime import date

    from memberflow.core.settings import apply_privacy_defaults, get_settings
    from memberflow.outreach.run import plan, write_memberships

    apply_privacy_defaults()
    settings = get_settings()
    planned = plan(settings, date.fromisoformat(as_of))
    rows = write_memberships(settings, planned)
    return {"date": as_of, "rows": rows, "segments": planned.summary()}


@task
def quality_gate(built: dict) -> str:
    from datetime import date

    from airflow.sdk.exceptions import AirflowFailException

    from expectations.marts import gate_warehouse
    from expectations.runner import QualityGateError
    from memberflow.core.settings import apply_privacy_defaults, get_settings

    apply_privacy_defaults()
    try:
        gate_warehouse(get_settings(), date.fromisoformat(built["date"]), gate="segments")
    except QualityGateError as exc:
        raise AirflowFailException(str(exc)) from exc
    return built["date"]


@task(outlets=[SEGMENT_DELIVERIES])
def deliver(as_of: str, **context) -> dict:
    from datetime import date

    from memberflow.core.settings import apply_privacy_defaults, get_settings
    from memberflow.outreach.run import deliver as deliver_segments

    apply_privacy_defaults()
    report = deliver_segments(get_settings(), date.fromisoformat(as_of))
    context["outlet_events"][SEGMENT_DELIVERIES].extra = {
        "as_of": as_of,
        "run_id": report.run_id,
        "sent": report.sent,
        "failed": sum(report.failed.values()),
    }
    return {
        "date": as_of,
        "run_id": report.run_id,
        "sent": report.sent,
        "failed": report.failed,
        "suppressed": report.suppressed,
        "report": report.report_path,
    }


@task
def sync_tags(delivered: dict) -> dict:
    from datetime import date

    from airflow.sdk.exceptions import AirflowFailException

    from memberflow.core.settings import apply_privacy_defaults, get_settings
    from memberflow.outreach.run import now_china
    from memberflow.outreach.tags import sync_tags as sync

    apply_privacy_defaults()
    report = sync(get_settings(), date.fromisoformat(delivered["date"]), now_china())
    if report.failed:  # what failed is tried again on the next run, because the difference is still there
        raise AirflowFailException(f"{sum(report.failed.values())} tag changes failed: {report.failed}")
    return report.to_dict()


@task
def read_back(delivered: dict) -> dict:
    from datetime import date

    from memberflow.core.settings import apply_privacy_defaults, get_settings
    from memberflow.outreach.readback import read_back as read

    apply_privacy_defaults()
    return read(get_settings(), date.fromisoformat(delivered["date"])).to_dict()


@dag(
    dag_id="deliver_segments",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("30 9 * * *", timezone=CHINA), assets=[MEMBER_SCORES]
    ),
    start_date=schedule_start(),
    catchup=False,
    max_active_runs=1,  # one delivery at a time: the ledger decides what is new
    default_args={
        "owner": "crm-operations",
        "pool": WAREHOUSE_POOL,  # one writer at a time, across workers (memberflow/assets.py)
        "retries": 1,
        "retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(hours=2),
    },
    tags=["memberflow", "outreach"],
    doc_md=__doc__,
)
def deliver_segments() -> None:
    delivered = deliver(quality_gate(build_segments(land_consent(delivery_date()))))
    sync_tags(delivered)
    read_back(delivered)


deliver_segments()
