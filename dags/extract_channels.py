"""
### extract_channels

Lands every channel table of the day: reads `<data_dir>/<channel>/<table>/dt=<date>/` for the run's local
(Asia/Shanghai) date, checks each row against the landing contract, tokenizes phones, and sends bad rows
to `$MEMBERFLOW_HOME/quarantine/` with a reason.

Per table, three tasks (write, audit, publish):
- `<channel>__<table>` extracts the partition into `$MEMBERFLOW_HOME/audit/`;
- `<channel>__<table>__gate` runs the table's landing quality suite (Great Expectations: required values,
  enums, keys, time and amount ranges, a re-sent day, volume against the trailing days);
- `<channel>__<table>__publish` swaps the partition into `$MEMBERFLOW_HOME/landing/` and updates the
  table's Asset (`landing.<channel>.<table>`), which schedules the transform DAG.
A critical quality failure fails the gate task; publish is skipped, so the date's previously published
data stays as it was and nothing downstream sees the bad partition. Warnings are recorded, not fatal.
`quality_docs` (a teardown) renders the day's Great Expectations Data Docs whatever happened.

The partition date is the run's logical date in China time; a run covers [date 00:00, next day 00:00)
China time, and rerunning or backfilling a date replaces exactly that date's partitions.

A table fails without retry when too many of its rows are quarantined (see `MEMBERFLOW_QUARANTINE_*`) or
a critical quality check fails; a missing partition fails after retries, since channel drops can arrive late.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag, task

from memberflow.assets import landed_asset
from memberflow.core.contracts import CONTRACTS
from memberflow.core.settings import schedule_start

CHINA = "Asia/Shanghai"


def _run_day(context):
    # Scheduled and backfill runs carry logical_date = start of the local day they cover; a manual run
    # triggered without a logical date falls back to its data interval.
    logical = context.get("logical_date") or context["data_interval_start"]
    return logical, pendulum.instance(logical).in_timezone(CHINA).date()


@task
def extract_table(channel: str, table: str, **context) -> dict:
    """Extract one table's partition for the run's local date into the audit area; row counts for XCom."""
    from airflow.sdk.exceptions import AirflowFailException

    from memberflow.core.contracts import get_contract
    from memberflow.core.settings import apply_privacy_defaults, get_settings
    from memberflow.extract import QuarantineThresholdError
    from memberflow.extract import extract_table as stage

    apply_privacy_defaults()
    logical, day = _run_day(context)
    try:
        report = stage(get_settings(), get_contract(channel, table), day, loaded_at=logical)
    except QuarantineThresholdError as exc:
        raise AirflowFailException(str(exc)) from exc
    return {
        "table": report.channel + "." + report.table,
        "dt": day.isoformat(),
        "read": report.read,
        "landed": report.landed,
        "quarantined": report.quarantined,
        "by_reason": report.by_reason,
        "staged_path": report.landed_path,
    }


@task
def gate_table(channel: str, table: str, **context) -> dict:
    """Validate the staged partition with the table's landing suite; a critical failure fails the task."""
    from airflow.sdk.exceptions import AirflowFailException

    from expectations.landing import audit_partition
    from expectations.runner import QualityGateError
    from memberflow.core.contracts import get_contract
    from memberflow.core.settings import apply_privacy_defaults, get_settings

    apply_privacy_defaults()
    _, day = _run_day(context)
    try:
        result = audit_partition(get_settings(), get_contract(channel, table), day)
    except QualityGateError as exc:
        raise AirflowFailException(str(exc)) from exc
    suite = result.suites[0]
    return {"status": result.status, "warnings": result.messages("warning"), "results": suite.result_path}


@task
def publish_table(channel: str, table: str, gate: dict, **context) -> str:
    """Swap the audited partition into landing and announce it on the table's Asset."""
    from memberflow.core.contracts import get_contract
    from memberflow.core.settings import get_settings
    from memberflow.extract import publish_partition

    contract = get_contract(channel, table)
    _, day = _run_day(context)
    target = publish_partition(get_settings(), contract, day, quality=gate["status"])
    context["outlet_events"][landed_asset(contract)].extra = {
        "dt": day.isoformat(),
        "quality": gate["status"],
    }
    return str(target)


@task
def quality_docs(**context) -> str:
    """Render the Data Docs of the day's landing validations (passed or failed)."""
    from expectations.runner import build_data_docs
    from memberflow.core.settings import get_settings

    _, day = _run_day(context)
    return str(build_data_docs(get_settings(), "landing", [day]))


@dag(
    dag_id="extract_channels",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone=CHINA),
    start_date=schedule_start(),
    catchup=False,
    max_active_runs=4,
    default_args={
        "owner": "data-engineering",
        "retries": 2,
        "retry_delay": timedelta(minutes=15),
        "execution_timeout": timedelta(minutes=30),
    },
    tags=["memberflow", "extract", "quality"],
    doc_md=__doc__,
)
def extract_channels() -> None:
    # A teardown runs whatever its upstream did and, unlike a plain ALL_DONE leaf, does not decide the run's
    # state: a failed gate still fails the run.
    docs = quality_docs().as_teardown()
    for contract in CONTRACTS:
        name = f"{contract.channel}__{contract.table}"
        staged = extract_table.override(task_id=name)(contract.channel, contract.table)
        # a critical finding raises AirflowFailException: no retry, since the same data fails the same way
        gate = gate_table.override(task_id=f"{name}__gate")(contract.channel, contract.table)
        published = publish_table.override(task_id=f"{name}__publish", outlets=[landed_asset(contract)])(
            contract.channel, contract.table, gate
        )
        staged >> gate >> published >> docs


extract_channels()
