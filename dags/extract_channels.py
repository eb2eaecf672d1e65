"""
### extract_channels

Lands every channel table of the day: reads `<data_dir>/<channel>/<table>/dt=<date>/` for the run's local
(Asia/Shanghai) date, checks each row against the landing contract, tokenizes phones, writes Parquet under
`$MEMBERFLOW_HOME/landing/`, and sends bad rows to `$MEMBERFLOW_HOME/quarantine/` with a reason.

The partition date is the run's logical date in China time. One task per table; each updates the
table's Asset (`landing.<channel>.<table>`) so the transform DAG can
be scheduled on them. A run covers the data interval [date 00:00, next day 00:00) China time; rerunning or
backfilling a date replaces exactly that date's partitions.

A table fails without retry when too many of its rows are quarantined (see `MEMBERFLOW_QUARANTINE_*`);
a missing partition fails after retries, since channel drops can arrive late.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, dag, task

from memberflow.assets import landed_asset
from memberflow.contracts import CONTRACTS

CHINA = "Asia/Shanghai"


@task
def extract_table(channel: str, table: str, **context) -> dict:
    """Land one table's partition for the run's local date; returns row counts and paths for XCom."""
    from airflow.sdk.exceptions import AirflowFailException

    from memberflow.config import apply_privacy_defaults, get_settings
    from memberflow.contracts import get_contract
    from memberflow.extract import QuarantineThresholdError
    from memberflow.extract import extract_table as land

    apply_privacy_defaults()
    contract = get_contract(channel, table)
    # Scheduled and backfill runs carry logical_date = start of the local day they cover; a manual run
    # triggered without a logical date falls back to its data interval.
    logical = context.get("logical_date") or context["data_interval_start"]
    day = pendulum.instance(logical).in_timezone(CHINA).date()
    try:
        report = land(get_settings(), contract, day, loaded_at=logical)
    except QuarantineThresholdError as exc:
        raise AirflowFailException(str(exc)) from exc
    context["outlet_events"][landed_asset(contract)].extra = {"dt": day.isoformat(), "rows": report.landed}
    return {
        "table": contract.name,
        "dt": day.isoformat(),
        "read": report.read,
        "landed": report.landed,
        "quarantined": report.quarantined,
        "by_reason": report.by_reason,
        "landed_path": report.landed_path,
    }


@dag(
    dag_id="extract_channels",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone=CHINA),
    start_date=pendulum.datetime(2026, 1, 1, tz=CHINA),
    catchup=False,
    max_active_runs=4,
    default_args={
        "owner": "data-engineering",
        "retries": 2,
        "retry_delay": timedelta(minutes=15),
        "execution_timeout": timedelta(minutes=30),
    },
    tags=["memberflow", "extract"],
    doc_md=__doc__,
)
def extract_channels() -> None:
    for contract in CONTRACTS:
        extract_table.override(
            task_id=f"{contract.channel}__{contract.table}",
            outlets=[landed_asset(contract)],
        )(contract.channel, contract.table)


extract_channels()
