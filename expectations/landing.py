"""The landing gate: one suite per channel table, run on its extracted partitions before they are published.

Extract already holds every *row* to the contract (bad rows are quarantined one by one). This gate checks
what no single row can show: that a partition as a whole looks like the channel's usual delivery —
its volume against the trailing days, amounts in yuan rather than fen, no day re-sent under another date,
times within the business period, rows not arriving implausibly late — and re-asserts the landed file's
own invariants (required values, enums, unique keys) so a writer that bypassed extract is caught too.

A table's partitions are gated in batches (a daily run is a batch of one; a backfill or a first build is
up to ``BATCH_DAYS`` at once): one Great Expectations run over all of the batch's rows, with the results
kept per partition (``expectations.runner.validate_partitions``). Within a batch, a partition is compared
with the published ones and with the batch's earlier days, as if those had been published first.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from expectations.config import QualityConfig
from expectations.gx import load as load_gx
from expectations.runner import (
    PARTITION,
    GateResult,
    QualityGateError,
    Suite,
    gate_result,
    only,
    validate_partitions,
)
from memberflow.core.contracts import LOCAL_TZ, Kind, TableContract
from memberflow.core.settings import Settings
from memberflow.extract import (
    landed_schema,
    loaded_at_for,
    partition_days,
    publish_partition,
    reject_partition,
    staged_partition,
)

GATE = "landing"

# Columns a batch frame adds for checks whose bound depends on the row's partition.
DAY_END = "_day_end"  # the end of the partition's day (China time): no event time after it
# how many days after its local date a row arrived: the partition date - local_date
DAYS_LATE = "_days_late"


def _published_partitions(settings: Settings, contract: TableContract) -> dict[date, Path]:
    folders = partition_days(settings.landing_dir / contract.channel / contract.table)
    return {day: f / "part-0.parquet" for day, f in folders.items() if (f / "part-0.parquet").exists()}


def landing_suite(
    config: QualityConfig, contract: TableContract, rows: dict[date, int], history: dict[date, int]
) -> Suite:
    """The checks of a batch of one table's partitions: ``rows`` holds each batch partition's row count,
    ``history`` the row counts of the published partitions outside the batch, by date."""
    gx = load_gx()

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
    key = ", ".join(contract.key)
    suite.add(
        "key_unique",
        f"key ({key}) unique in the partition"
        if len(contract.key) > 1
        else f"key {key} unique in the partition",
        lambda s: e.ExpectCompoundColumnsToBeUnique(column_list=[*contract.key, PARTITION]),
    )
    start = config.check(GATE, contract.name, "times_in_range").get("business_start")
    for column in (c for c in contract.columns if c.kind is Kind.TIME):
        suite.add(
            "times_in_range",
            f"{column.name} between the business start ({start}, the quality config's "
            "times_in_range.business_start) and the end of the partition's day (China time)",
            lambda s, c=column: [
                e.ExpectColumnValuesToBeBetween(
                    column=c.name, min_value=loaded_at_for(date.fromisoformat(str(s["business_start"])))
                ),
                e.ExpectColumnPairValuesAToBeGreaterThanB(
                    column_A=DAY_END, column_B=c.name, or_equal=True, ignore_row_if="either_value_is_missing"
                ),
            ],
        )
    if contract.date_column:
        suite.add(
            "late_rows",
            "rows belong to the partition's day or arrive only a few days late",
            lambda s: e.ExpectColumnValuesToBeBetween(
                column=DAYS_LATE, min_value=0, max_value=int(s["max_late_days"]), mostly=float(s["mostly"])
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
        for day in (d for d, n in rows.items() if n):  # an empty partition has no median: volume judges it
            suite.add(
                "amount_median",
                f"median {column.name} within the plausible band (yuan, not fen)",
                lambda s, c=column, day=day: e.ExpectColumnMedianToBeBetween(
                    column=c.name, min_value=float(s["min"]), max_value=float(s["max"]), **only(day)
                ),
                partition=day,
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
    # the batch's partitions count as history for its later days, as if published one by one
    everything = {**history, **rows}
    for day in rows:
        _add_volume(suite, day, {d: n for d, n in everything.items() if d != day})
    return suite


def _trailing_counts(history: dict[date, int], day: date, window: int) -> list[int]:
    """The rows of the partitions in the ``window`` days before ``day`` (looked up, not scanned: the
    volume reference asks this for eight weeks of past days)."""
    return [history[d] for d in (day - timedelta(days=k) for k in range(1, window + 1)) if d in history]


def _trailing_median(history: dict[date, int], day: date, window: int, need: int) -> float | None:
    counts = _trailing_counts(history, day, window)
    return statistics.median(counts) if len(counts) >= need else None


def _weekday_median(history: dict[date, int], day: date, weeks: int) -> float | None:
    """The median rows of the same weekday in the ``weeks`` weeks before (at least three of them)."""
    counts = [history[d] for d in (day - timedelta(days=7 * k) for k in range(1, weeks + 1)) if d in history]
    return statistics.median(counts) if len(counts) >= 3 else None


def _volume_reference(history: dict[date, int], day: date, settings: dict) -> tuple[float, str] | None:
    """What ``day``'s rows are compared with: the trailing median, or, for a table whose volume follows the
    weekday (live sessions on set days, weekend shopping), the median of the same weekday in the last
    weeks. The table shows which: the reference that was closer to the actual rows over the last eight
    weeks (median absolute log ratio, at least 14 days of both) wins."""
    window, need, weeks = (
        int(settings["trailing_days"]),
        int(settings["min_history_days"]),
        int(settings["weeks"]),
    )
    trailing = _trailing_median(history, day, window, need)
    if trailing is None:
        return None
    errors: dict[str, list[float]] = {"trailing": [], "weekday": []}
    for back in range(1, 57):
        past = day - timedelta(days=back)
        if history.get(past, 0) <= 0:
            continue
        then = _trailing_median(history, past, window, need), _weekday_median(history, past, weeks)
        if all(then):
            errors["trailing"].append(abs(math.log(history[past] / then[0])))
            errors["weekday"].append(abs(math.log(history[past] / then[1])))
    weekday = _weekday_median(history, day, weeks)
    if (
        weekday
        and len(errors["weekday"]) >= 14
        and statistics.median(errors["weekday"]) < statistics.median(errors["trailing"])
    ):
        return (
            weekday,
            f"the median of the last {weeks} {day:%A}s, {weekday:g} (the table follows the weekday)",
        )
    return trailing, f"the {window}-day median of {trailing:g}"


def _add_volume(suite: Suite, day: date, history: dict[date, int]) -> None:
    settings = suite.settings("volume")
    if settings["severity"] == "off":
        return
    window = int(settings["trailing_days"])
    reference = _volume_reference(history, day, settings)
    if reference is None:
        suite.note(
            f"volume not checked: {len(_trailing_counts(history, day, window))} published partitions in the "
            f"{window} days before (needs {settings['min_history_days']})",
            day,
        )
        return
    median, what = reference
    if median < float(settings["min_median_rows"]):
        suite.note(
            f"volume not checked: the reference of {median:g} rows is below {settings['min_median_rows']}",
            day,
        )
        return
    # A table's first weeks are not its steady state (a go-live export carries the back catalogue, a new
    # channel ramps up): until it has warmup_days partitions, a volume finding is a warning.
    earlier = sum(1 for d in history if d < day)
    warming_up = earlier < int(settings["warmup_days"])
    if warming_up:
        suite.note(
            f"volume is a warning while the table warms up: {earlier} of {settings['warmup_days']} days", day
        )
    # The low bound allows for chance on small tables: no tighter than four Poisson standard deviations.
    low = min(float(settings["low"]), 1 - 4 / math.sqrt(median))
    suite.add_row_count_band("volume", median, what, warming_up, day, low=low)


def batch_frame(
    contract: TableContract,
    staged: dict[date, Path],
    lookback: int,
    published: dict[date, Path],
    alongside: dict[date, Path] | None = None,
):
    """The rows of the ``staged`` partitions (date → Parquet file) as one pandas frame, amounts as doubles,
    with each row's ``PARTITION``, ``DAY_END``, ``DAYS_LATE`` and ``_key_landed_before``: whether its key
    already landed within ``lookback`` days in a ``published`` partition or in an earlier partition of the
    run (the batch's own, or ``alongside``: the run's partitions validated in other batches)."""
    run = {**(alongside or {}), **staged}

    def near(day: date) -> bool:  # could hold a key one of the staged rows repeats
        return min(abs((day - d).days) for d in staged) <= lookback

    # Only partitions within the lookback of a staged day are read for keys: a backfill's batch would
    # otherwise read every key of the whole run again (a year: twelve times over), to find none nearer.
    files = [(str(path), day, True) for day, path in run.items() if day in staged or near(day)]
    files += [(str(path), day, False) for day, path in published.items() if day not in run and near(day)]
    catalog = pa.table(
        {
            "file": [f[0] for f in files],
            "day": pa.array([f[1] for f in files], pa.date32()),
            "in_run": [f[2] for f in files],
        }
    )
    names = landed_schema(contract).names
    kinds = {c.name: c.kind for c in contract.columns}
    select = ", ".join(
        f'cast(cur."{n}" as double) as "{n}"' if kinds.get(n) is Kind.AMOUNT else f'cur."{n}"' for n in names
    )
    keys = ", ".join(f'"{k}"' for k in contract.key)
    same_key = " and ".join(f'cur."{k}" = prev."{k}"' for k in contract.key)
    late = f"date_diff('day', cur.local_date, cur._day) as \"{DAYS_LATE}\", " if contract.date_column else ""
    sql = f"""
        with cur as (
            select c.*, f.day as _day
            from read_parquet(?, filename = true) c join catalog f on c.filename = f.file
        ),
        prev as (
            select distinct {keys}, f.day as _day, f.in_run
            from read_parquet(?, filename = true) p join catalog f on p.filename = f.file
        )
        select {select}, strftime(cur._day, '%Y-%m-%d') as "{PARTITION}", {late}
            exists (
                select 1 from prev
                where {same_key} and prev._day <> cur._day
                    and abs(date_diff('day', prev._day, cur._day)) <= {int(lookback)}
                    and (not prev.in_run or prev._day < cur._day)
            ) as _key_landed_before
        from cur
        order by cur._day, cur._source_file, cur._row_number
    """
    with duckdb.connect() as con:
        con.execute("set threads = 1")
        con.register("catalog", catalog)
        frame = con.execute(sql, [[str(p) for p in staged.values()], [f[0] for f in files]]).df()
    if any(c.kind is Kind.TIME for c in contract.columns):
        ends = pd.to_datetime(frame[PARTITION]).dt.tz_localize(LOCAL_TZ) + pd.Timedelta(days=1)
        frame[DAY_END] = ends.dt.tz_convert("UTC")
    return frame.reset_index(drop=True)


# At most this many partitions of a table are validated in one batch (bounds the frame in memory).
BATCH_DAYS = 31


def gate_partitions(
    settings: Settings,
    contract: TableContract,
    staged: dict[date, Path],
    config: QualityConfig | None = None,
    alongside: dict[date, Path] | None = None,
) -> dict[date, GateResult]:
    """Validate extracted partitions (date → folder or file) of one table in one batch: each date's result.
    ``alongside``: the run's other staged partitions (gated in other batches), which count as if published
    before the later days."""

    def file(path: Path) -> Path:
        return path / "part-0.parquet" if path.is_dir() else path

    config = config or QualityConfig.load()
    staged = {day: file(path) for day, path in sorted(staged.items())}
    alongside = {day: file(path) for day, path in (alongside or {}).items() if day not in staged}
    published = _published_partitions(settings, contract)
    rows = {day: pq.read_metadata(path).num_rows for day, path in staged.items()}
    history = {
        d: pq.read_metadata(p).num_rows for d, p in {**published, **alongside}.items() if d not in staged
    }
    lookback = int(config.check(GATE, contract.name, "keys_not_landed_before")["lookback_days"])
    frame = batch_frame(contract, staged, lookback, published, alongside)
    suite = landing_suite(config, contract, rows, history)
    results = validate_partitions(settings, suite, frame, list(staged))
    return {day: gate_result(settings, GATE, day, [result], record=False) for day, result in results.items()}


def gate_partition(
    settings: Settings, contract: TableContract, day: date, path: Path, config: QualityConfig | None = None
) -> GateResult:
    """Validate the extracted partition at ``path`` (a folder or file) for ``day``."""
    return gate_partitions(settings, contract, {day: path}, config)[day]


def audit_partitions(
    settings: Settings, contract: TableContract, days: Sequence[date], config: QualityConfig | None = None
) -> dict[date, GateResult]:
    """Gate staged partitions of one table, ``BATCH_DAYS`` at a time; each one that fails a critical check
    is marked rejected (it stays in the audit area). Returns every date's result: check ``ok``."""
    config = config or QualityConfig.load()
    run = {day: staged_partition(settings, contract, day) for day in sorted(days)}
    days = list(run)
    results: dict[date, GateResult] = {}
    for start in range(0, len(days), BATCH_DAYS):
        batch = {day: run[day] for day in days[start : start + BATCH_DAYS]}
        others = {day: path for day, path in run.items() if day not in batch}
        results.update(gate_partitions(settings, contract, batch, config, others))
    for day, result in results.items():
        if not result.ok:
            reject_partition(settings, contract, day, result.explain())
    return results


def audit_partition(
    settings: Settings, contract: TableContract, day: date, config: QualityConfig | None = None
) -> GateResult:
    """Gate the staged partition; on a critical failure mark it rejected and raise ``QualityGateError``."""
    result = audit_partitions(settings, contract, [day], config)[day]
    if not result.ok:
        raise QualityGateError(result)
    return result


def audit_and_publish(
    settings: Settings, contract: TableContract, day: date, config: QualityConfig | None = None
) -> GateResult:
    """Gate the staged partition and publish it into landing (or reject it and raise)."""
    result = audit_partition(settings, contract, day, config)
    publish_partition(settings, contract, day, quality=result.status)
    return result
