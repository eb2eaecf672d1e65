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

**Landing history in one run.** The run parameter `days` (default 1) makes a run cover that many local days
ending with its own date: each table's task extracts every day, its gate validates them together (one
Great Expectations run per table and up to 31 days; the results are still kept per day) and publish swaps
them all in. A critical finding on any day fails the table's gate and none of its days is published (the
passing ones stay staged; fix the bad day and clear the table's tasks). Landing 60 days of history this way
is one run of 37 tasks instead of 60 runs: `airflow dags trigger extract_channels -c '{"days": 60}'`.

A table fails without retry when too many of its rows are quarantined (see `MEMBERFLOW_QUARANTINE_*`) or
a critical quality check fails; a missing partition fails after retries, since channel drops can arrive late.
The table tasks share the workspace's landing lock: while a command-line `memberflow extract` or `build` is
landing, they fail with "another run is landing data" and are retried.
"""

from __future__ import annotations

import contextlib
from datetime import date, timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, Param, dag, task

from memberflow.assets import landed_asset
from memberflow.core.contracts import CONTRACTS
from memberflow.core.settings import schedule_start

CHINA = "Asia/Shanghai"


def _run_day(context):
    # Scheduled and backfill runs carry logical_date = start of the local day they cover; a manual run
    # triggered without a logical date falls back to its data interval.
    logical = context.get("logical_date") or context["data_interval_start"]
    return logical, pendulum.instance(logical).in_timezone(CHINA).date()


def _run_days(context) -> list[date]:
    """The local days the run lands, oldest first: its own and the ``days - 1`` before it."""
    _, day = _run_day(context)
    return [day - timedelta(days=n) for n in range(int(context["params"]["days"]) - 1, -1, -1)]


@contextlib.contextmanager
def _landing(settings):
    """The landing lock, shared by this run's table tasks; a command-line run landing in the workspace
    holds it alone, and the task then fails with WorkspaceBusy and is retried."""
    from memberflow.warehouse import landing_lock

    with landing_lock(settings, "Airflow extract_channels", shared=True):
        yield


@task
def extract_table(channel: str, table: str, **context) -> dict:
    """Extract the run's partitions of one table into the audit area; row counts for XCom."""
    from collections import Counter

    from airflow.sdk.exceptions import AirflowFailException

    from memberflow.core.contracts import get_contract
    from memberflow.core.settings import apply_privacy_defaults, get_settings
    from memberflow.extract import PartitionRefusedError
    from memberflow.extract import extract_table as stage

    apply_privacy_defaults()
    logical, today = _run_day(context)
    settings, contract = get_settings(), get_contract(channel, table)
    summary = {"table": contract.name, "days": [], "read": 0, "landed": 0, "quarantined": 0}
    reasons: Counter[str] = Counter()
    failed = []
    with _landing(settings):
        for day in _run_days(context):
            try:
                # the run's own day is loaded at its logical date; earlier days of a backfill at their own
                report = stage(settings, contract, day, loaded_at=logical if day == today else None)
            except PartitionRefusedError as exc:
                failed.append(str(exc))
                continue
            summary["days"].append(day.isoformat())
            for key in ("read", "landed", "quarantined"):
                summary[key] += getattr(report, key)
            reasons.update(report.by_reason)
    if failed:
        raise AirflowFailException("\n".join(failed))
    return {**summary, "by_reason": dict(sorted(reasons.items()))}


@task
def gate_table(channel: str, table: str, **context) -> dict:
    """Validate the staged partitions with the table's landing suite; a critical failure on any of the run's
    days fails the task (and nothing of the table is published by this run)."""
    from airflow.sdk.exceptions import AirflowFailException

    from expectations.landing import audit_partitions
    from expectations.runner import worst_status
    from memberflow.core.contracts import get_contract
    from memberflow.core.settings import apply_privacy_defaults, get_settings

    apply_privacy_defaults()
    with _landing(get_settings()):
        results = audit_partitions(get_settings(), get_contract(channel, table), _run_days(context))
    failed = [result.explain() for result in results.values() if not result.ok]
    if failed:
        raise AirflowFailException("\n".join(failed))
    return {
        "status": worst_status(result.status for result in results.values()),
        "warnings": [m for result in results.values() for m in result.messages("warning")],
        "results": [result.suites[0].result_path for result in results.values()],
    }


@task
def publish_table(channel: str, table: str, gate: dict, **context) -> list[str]:
    """Swap the audited partitions into landing and announce them on the table's Asset."""
    from memberflow.core.contracts import get_contract
    from memberflow.core.settings import get_settings
    from memberflow.extract import publish_partition

    contract = get_contract(channel, table)
    days = _run_days(context)
    with _landing(get_settings()):
        targets = [
            str(publish_partition(get_settings(), contract, day, quality=gate["status"])) for day in days
        ]
    context["outlet_events"][landed_asset(contract)].extra = {
        "dt": days[-1].isoformat(),
        "days": len(days),
        "quality": gate["status"],
    }
    return targets


@task
def quality_docs(**context) -> str:
    """Render the Data Docs of the run's landing validations (passed or failed)."""
    from expectations.runner import build_data_docs
    from memberflow.core.settings import get_settings

    return str(build_data_docs(get_settings(), "landing", _run_days(context)))


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
    params={
        "days": Param(
            1,
            type="integer",
            minimum=1,
            maximum=400,
            description="Local days the run lands, ending with its own date (history in one run).",
        )
    },
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
