"""The landing gate: one suite per channel table, run on a day's extracted partition before it is published.

Extract already holds every *row* to the contract (bad rows are quarantined one by one). This gate checks
what no single row can show: that the partition as a whole looks like the channel's usual delivery —
its volume against the trailing days, amounts in yuan rather than fen, no day re-sent under another date,
times within the business period, rows not arriving implausibly late — and re-asserts the landed file's
own invariants (required values, enums, unique keys) so a writer that bypassed extract is caught too.
"""

from __future__ import annotations

import statistics
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from expectations.config import QualityConfig
from expectations.runner import GateResult, QualityGateError, Suite, gate_result, validate
from memberflow.core.contracts import LOCAL_TZ, Kind, TableContract
from memberflow.core.settings import Settings
from memberflow.extract import (
    landed_schema,
    partition_days,
    publish_partition,
    reject_partition,
    staged_partition,
)

GATE = "landing"


def _published_partitions(settings: Settings, contract: TableContract) -> dict[date, Path]:
    folders = partition_days(settings.landing_dir / contract.channel / contract.table)
    return {day: f / "part-0.parquet" for day, f in folders.items() if (f / "part-0.parquet").exists()}


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time(), LOCAL_TZ).astimezone(UTC)


def landing_suite(
    config: QualityConfig, contract: TableContract, day: date, history: dict[date, int], rows: int
) -> Suite:
    """The checks of one table's ``rows``-row partition for ``day``; ``history``: rows of the other
    published partitions by date."""
    import great_expectations as gx

    e = gx.expectations
    columns = landed_schema(contract).names
    suite = Suite(GATE, contract.name, config, sample_columns=[c for c in contract.key if c in columns])

    for name in (c.name for c in contract.columns if c.required and c.kind is not Kind.PHONE):
        suite.add(
            "required_not_null",
            f"{name} is required",
            lambda s, name=name: e.ExpectColumnValuesToNotBeNull(column=name),
        )
    for column in contract.columns:
        if column.kind is Kind.ENUM:
            values = list(column.values)
            if contract.phone_when is not None and column.name == contract.phone_when[1]:
                # phones given in this column were tokenized at extract, and their type renamed with them
                values = [v if v != contract.phone_when[2] else "phone_token" for v in values]
            suite.add(
                "enum_values",
                f"{column.name} in {', '.join(values)}",
                lambda s, c=column, v=values: e.ExpectColumnValuesToBeInSet(column=c.name, value_set=v),
            )
    if len(contract.key) == 1:
        suite.add(
            "key_unique",
            f"key {contract.key[0]} unique in the partition",
            lambda s: e.ExpectColumnValuesToBeUnique(column=contract.key[0]),
        )
    else:
        suite.add(
            "key_unique",
            f"key ({', '.join(contract.key)}) unique in the partition",
            lambda s: e.ExpectCompoundColumnsToBeUnique(column_list=list(contract.key)),
        )
    for column in (c for c in contract.columns if c.kind is Kind.TIME):
        suite.add(
            "times_in_range",
            f"{column.name} between the business start and the end of {day.isoformat()} (China time)",
            lambda s, c=column: e.ExpectColumnValuesToBeBetween(
                column=c.name,
                min_value=_start_of(date.fromisoformat(str(s["business_start"]))),
                max_value=_start_of(day + timedelta(days=1)),
            ),
        )
    if contract.date_column:
        suite.add(
            "late_rows",
            "rows belong to the run's day or arrive only a few days late",
            lambda s: e.ExpectColumnValuesToBeBetween(
                column="local_date",  # a datetime64 column in the frame
                min_value=datetime.combine(day - timedelta(days=int(s["max_late_days"])), time()),
                max_value=datetime.combine(day, time()),
                mostly=float(s["mostly"]),
            ),
        )
    for column in (c for c in contract.columns if c.kind is Kind.AMOUNT):
        suite.add(
            "amount_range",
            f"{column.name} is CNY between 0 and a plausible maximum",
            lambda s, c=column: e.ExpectColumnValuesToBeBetween(
                column=c.name, min_value=0, max_value=float(s["max"])
            ),
        )
        if not rows:
            continue  # an empty partition has no median; the volume check judges it
        suite.add(
            "amount_median",
            f"median {column.name} within the plausible band (yuan, not fen)",
            lambda s, c=column: e.ExpectColumnMedianToBeBetween(
                column=c.name, min_value=float(s["min"]), max_value=float(s["max"])
            ),
        )
    for column in (c for c in contract.columns if c.kind in (Kind.QTY, Kind.COUNT)):
        suite.add(
            "counts_non_negative",
            f"{column.name} is not negative",
            lambda s, c=column: e.ExpectColumnValuesToBeBetween(column=c.name, min_value=0),
        )
    suite.add(
        "keys_not_landed_before",
        "row keys not already landed in another partition (a re-sent or duplicated day)",
        lambda s: e.ExpectColumnValuesToBeInSet(
            column="_key_landed_before", value_set=[False], mostly=1.0 - float(s["max_share"])
        ),
    )
    _add_volume(suite, day, history)
    return suite


def _add_volume(suite: Suite, day: date, history: dict[date, int]) -> None:
    settings = suite.settings("volume")
    if settings["severity"] == "off":
        return
    window = int(settings["trailing_days"])
    counts = [rows for d, rows in history.items() if day - timedelta(days=window) <= d < day]
    if len(counts) < int(settings["min_history_days"]):
        suite.note(
            f"volume not checked: {len(counts)} published partitions in the {window} days before "
            f"(needs {settings['min_history_days']})"
        )
        return
    median = statistics.median(counts)
    if median < float(settings["min_median_rows"]):
        suite.note(
            f"volume not checked: the trailing median of {median:g} rows is below "
            f"{settings['min_median_rows']}"
        )
        return
    # A table's first weeks are not its steady state (a go-live export carries the back catalogue, a new
    # channel ramps up): until it has warmup_days partitions, a volume finding is a warning.
    earlier = sum(1 for d in history if d < day)
    warming_up = earlier < int(settings["warmup_days"])
    if warming_up:
        suite.note(
            f"volume is a warning while the table warms up: {earlier} of {settings['warmup_days']} days"
        )
    suite.add_row_count_band("volume", median, f"the {window}-day median of {median:g}", warming_up)


def partition_frame(settings: Settings, contract: TableContract, day: date, path: Path, lookback: int):
    """The partition as pandas, amounts as doubles, with ``_key_landed_before`` from the published ones."""
    others = [
        str(p)
        for d, p in sorted(_published_partitions(settings, contract).items())
        if d != day and abs((d - day).days) <= lookback
    ]
    names = landed_schema(contract).names
    kinds = {c.name: c.kind for c in contract.columns}
    select = ", ".join(
        f'cast(cur."{n}" as double) as "{n}"' if kinds.get(n) is Kind.AMOUNT else f'cur."{n}"' for n in names
    )
    keys = ", ".join(f'"{k}"' for k in contract.key)
    join = " and ".join(f'cur."{k}" = prev."{k}"' for k in contract.key)
    with duckdb.connect() as con:
        con.execute("set threads = 1")
        if others:
            sql = (
                f"select {select}, prev._hit is not null as _key_landed_before "
                f"from read_parquet(?) cur left join (select distinct {keys}, true as _hit "
                f"from read_parquet(?)) prev on {join} order by cur._source_file, cur._row_number"
            )
            frame = con.execute(sql, [str(path), others]).df()
        else:
            sql = (
                f"select {select}, false as _key_landed_before from read_parquet(?) cur order by _row_number"
            )
            frame = con.execute(sql, [str(path)]).df()
    return frame.reset_index(drop=True)


def gate_partition(
    settings: Settings, contract: TableContract, day: date, path: Path, config: QualityConfig | None = None
) -> GateResult:
    """Validate the extracted partition at ``path`` (a folder or file) for ``day``."""
    config = config or QualityConfig.load()
    part = path / "part-0.parquet" if path.is_dir() else path
    history = {
        d: pq.read_metadata(p).num_rows
        for d, p in _published_partitions(settings, contract).items()
        if d != day
    }
    lookback = int(config.check(GATE, contract.name, "keys_not_landed_before")["lookback_days"])
    frame = partition_frame(settings, contract, day, part, lookback)
    suite = landing_suite(config, contract, day, history, len(frame))
    return gate_result(settings, GATE, day, [validate(settings, suite, day, frame)], record=False)


def audit_partition(
    settings: Settings, contract: TableContract, day: date, config: QualityConfig | None = None
) -> GateResult:
    """Gate the staged partition; on a critical failure mark it rejected and raise ``QualityGateError``."""
    result = gate_partition(settings, contract, day, staged_partition(settings, contract, day), config)
    if not result.ok:
        error = QualityGateError(result)
        reject_partition(settings, contract, day, str(error))
        raise error
    return result


def audit_and_publish(
    settings: Settings, contract: TableContract, day: date, config: QualityConfig | None = None
) -> GateResult:
    """Gate the staged partition and publish it into landing (or reject it and raise)."""
    result = audit_partition(settings, contract, day, config)
    publish_partition(settings, contract, day, quality=result.status)
    return result
