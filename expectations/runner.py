"""Run expectation suites with Great Expectations and keep what they found.

A suite is a list of ``Check``: one GX expectation tagged with the config id it comes from, its severity
and a sentence for people. Frames are validated as pandas batches (GX's SQL data source does not work on
DuckDB); each gate builds its frames in DuckDB so that only what a check needs is in memory.

Per validated subject (a landed table or a mart) and date, ``$MEMBERFLOW_HOME/quality`` keeps:
``results/<gate>/dt=<date>/<subject>.json`` (the findings, with masked sample rows), ``<subject>.gx.json``
(GX's full validation result) and GX's Data Docs site ``docs/index.html``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from expectations.config import QualityConfig
from expectations.gx import load as load_gx
from memberflow.core.phones import redact_phones
from memberflow.core.settings import Settings
from memberflow.extract import partition_days

log = logging.getLogger(__name__)

SAMPLE_ROWS = 5


@dataclass
class Check:
    id: str  # the config key, e.g. "volume"
    severity: str  # critical | warning
    expectation: Any  # a great_expectations Expectation
    about: str  # what the check guards, for people


class Suite:
    """The checks of one subject, built from the config: a check set to ``off`` is never added."""

    def __init__(self, gate: str, subject: str, config: QualityConfig, sample_columns: Sequence[str] = ()):
        self.gate, self.subject, self.config = gate, subject, config
        self.sample_columns = list(sample_columns)
        self.checks: list[Check] = []
        self.notes: list[str] = []
        self.partition_notes: dict[date, list[str]] = {}

    def settings(self, check: str) -> dict[str, Any]:
        return self.config.check(self.gate, self.subject, check)

    def add(
        self,
        check: str,
        about: str,
        make: Callable[[dict[str, Any]], Any],
        warning_only: bool = False,
        partition: date | None = None,
    ) -> None:
        """Add the expectation(s) ``make(settings)`` returns for config check ``check``, unless it is off.
        ``warning_only``: a critical check counts as a warning this time (e.g. a table still warming up).
        ``partition``: the expectation is about that partition of a batch only (its ``row_condition`` says
        so); without it, an expectation is about every row and a batch's results are split per partition."""
        settings = self.settings(check)
        if settings["severity"] == "off":
            return
        severity = "warning" if warning_only else settings["severity"]
        made = make(settings)
        for expectation in made if isinstance(made, list) else [made]:
            # GX returns results in its own order: the meta carries the check (and the partition it is
            # about, in a batch) back to its result.
            expectation.meta = {"check": check, "severity": severity, "about": about}
            if partition is not None:
                expectation.meta["partition"] = partition.isoformat()
            expectation.severity = severity  # shown in Data Docs too
            self.checks.append(Check(check, severity, expectation, about))

    def add_row_count_band(
        self,
        check: str,
        reference: float,
        what: str,
        warning_only: bool = False,
        partition: date | None = None,
        low: float | None = None,
    ) -> None:
        """Rows within [low x reference, high x reference], the band from the check's settings (``low``
        given: that lower bound instead); with ``partition``, the rows of that partition of a batch."""
        gx = load_gx()

        settings = self.settings(check)
        low, high = float(settings["low"]) if low is None else low, float(settings["high"])
        self.add(
            check,
            f"rows within {low:g}x-{high:g}x {what}",
            lambda s: gx.expectations.ExpectTableRowCountToBeBetween(
                min_value=int(reference * low), max_value=int(reference * high), **only(partition)
            ),
            warning_only,
            partition,
        )

    def note(self, text: str, partition: date | None = None) -> None:
        """Something the suite could not check this time (e.g. too little history), shown with the results
        (of one partition of a batch, or of all)."""
        if partition is None:
            self.notes.append(text)
        else:
            self.partition_notes.setdefault(partition, []).append(text)


# In a batch frame (many partitions of one table validated at once), the partition each row belongs to.
PARTITION = "_partition_date"


def only(partition: date | None) -> dict[str, Any]:
    """Keyword arguments that restrict an expectation to one partition of a batch frame (none without)."""
    if partition is None:
        return {}
    load_gx()
    from great_expectations.expectations.row_conditions import Column

    return {"row_condition": Column(PARTITION) == partition.isoformat()}


@dataclass
class Finding:
    check: str
    severity: str
    expectation: str
    column: str | None
    about: str
    success: bool
    observed: str
    samples: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> str:
        target = f"({self.column})" if self.column else ""
        head = f"{self.expectation}{target} [{self.check}, {self.severity}]"
        return f"{head}: {self.about}; observed {self.observed}"


@dataclass
class SuiteResult:
    gate: str
    subject: str
    date: str
    findings: list[Finding]
    notes: list[str]
    rows: int
    validated_at: str
    result_path: str = ""
    gx_result_path: str = ""

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if not f.success]

    @property
    def critical(self) -> list[Finding]:
        return [f for f in self.failures if f.severity == "critical"]

    @property
    def status(self) -> str:
        if self.critical:
            return "failed"
        return "warning" if self.failures else "passed"

    def messages(self, severity: str | None = None) -> list[str]:
        return [
            f"{self.gate} gate, {self.subject} {self.date}: {f.describe()}"
            for f in self.failures
            if severity is None or f.severity == severity
        ]

    def to_dict(self) -> dict:
        data = asdict(self)
        data["status"] = self.status
        return data

    @classmethod
    def from_dict(cls, data: dict) -> SuiteResult:
        data = {k: v for k, v in data.items() if k != "status"}
        data["findings"] = [Finding(**f) for f in data["findings"]]
        return cls(**data)


@dataclass
class GateResult:
    gate: str
    date: str
    suites: list[SuiteResult]
    docs_path: str = ""

    @property
    def ok(self) -> bool:
        return not any(s.critical for s in self.suites)

    @property
    def status(self) -> str:
        return worst_status(s.status for s in self.suites)

    def messages(self, severity: str | None = None) -> list[str]:
        return [m for s in self.suites for m in s.messages(severity)]

    def explain(self) -> str:
        """What failed critically, where the results are and the Data Docs (a QualityGateError's message)."""
        lines = self.messages("critical")
        where = f"results: {self.suites[0].result_path}" if len(self.suites) == 1 else ""
        docs = f"Data Docs: {self.docs_path}" if self.docs_path else ""
        return "\n".join([*lines, *(x for x in (where, docs) if x)])


def worst_status(statuses: Iterable[str]) -> str:
    """The verdict over several results: failed over warning over passed."""
    found = set(statuses)
    return next((s for s in ("failed", "warning") if s in found), "passed")


class QualityGateError(RuntimeError):
    """A critical check failed; the message names the subject, the expectation and the observed value."""

    def __init__(self, result: GateResult):
        self.result = result
        super().__init__(result.explain())


# --- GX context ------------------------------------------------------------------------------------------


def results_dir(settings: Settings, gate: str, day: date) -> Path:
    return settings.quality_dir / "results" / gate / f"dt={day.isoformat()}"


def docs_index(settings: Settings) -> Path:
    return settings.quality_dir / "docs" / "index.html"


# How many of the newest validation results the Data Docs index links.
DOCS_VALIDATIONS = 1000


@cache
def _context(quality_dir: Path):
    """An ephemeral GX context whose validation results and Data Docs are files in the workspace."""
    gx = load_gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    config.stores["validation_results_store"] = {
        "class_name": "ValidationResultsStore",
        "store_backend": {
            "class_name": "TupleFilesystemStoreBackend",
            "base_directory": str(quality_dir / "gx" / "validations"),
        },
    }
    config.data_docs_sites = {
        "local": {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(quality_dir / "docs"),
            },
            # The index links (and a full rebuild renders) only the newest validations: reading every
            # stored result back made each landing run's docs cost grow with history (26 s of a 40 s run
            # after a year at 100k members). Older pages stay on disk; the gate results are all kept.
            "site_index_builder": {
                "class_name": "DefaultSiteIndexBuilder",
                "validation_results_limit": DOCS_VALIDATIONS,
            },
        }
    }
    context = gx.get_context(project_config=config, mode="ephemeral")
    context.data_sources.add_pandas("memberflow")
    return context


def _validation_definition(context, name: str, suite: Suite):
    gx = load_gx()
    from great_expectations.exceptions import DataContextError

    source = context.data_sources.get("memberflow")
    try:
        asset = source.get_asset(name)
    except LookupError:
        asset = source.add_dataframe_asset(name)
    try:
        batch = asset.get_batch_definition("frame")
    except KeyError:
        batch = asset.add_batch_definition_whole_dataframe("frame")
    # Replaced, not updated: GX's add_or_update matches every new expectation against every stored one to
    # keep their ids (quadratic, ~0.3 s per landing batch of 31 days whose per-day checks all differ from
    # the batch before). The ids are not used: results are read by the expectations' meta and kwargs.
    for store in (context.validation_definitions, context.suites):
        with contextlib.suppress(DataContextError):
            store.delete(name)
    gx_suite = context.suites.add(
        gx.ExpectationSuite(name=name, expectations=[c.expectation for c in suite.checks])
    )
    return context.validation_definitions.add(gx.ValidationDefinition(name=name, data=batch, suite=gx_suite))


# --- validating -----------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A JSON-friendly, phone-free form of a value from a frame or a GX result."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, str):
        with contextlib.suppress(ValueError, AttributeError):
            value = value.item()
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    if isinstance(value, bool | int):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    text = str(value)
    return None if text in ("NaT", "<NA>", "nan") else redact_phones(text)


def _error(exception: dict | None) -> str | None:
    """GX reports an expectation that could not be evaluated either flat or per metric."""
    if not exception:
        return None
    if exception.get("raised_exception"):
        return str(exception.get("exception_message"))
    for value in exception.values():
        if isinstance(value, dict) and (value.get("raised_exception") or value.get("exception_message")):
            return str(value.get("exception_message"))
    return None


def _observed(result: dict, exception: dict | None, examples: list | None = None) -> str:
    """What a check saw. ``examples``: offending values as the caller's frame holds them (GX's own list
    has them as GX was handed them, e.g. a nullable integer column as floats)."""
    error = _error(exception)
    if error:
        return f"error: {error}"
    if "observed_value" in result:
        return json.dumps(_plain(result["observed_value"]), ensure_ascii=False)
    count = result.get("unexpected_count") or 0
    total = result.get("element_count") or 0
    share = result.get("unexpected_percent") or 0.0
    text = f"{count:,} of {total:,} rows unexpected ({share:.2f}%)"
    if examples is None:
        examples = _plain(result.get("partial_unexpected_list") or [])[:3]
    if count and examples:
        text += ", e.g. " + ", ".join(json.dumps(e, ensure_ascii=False) for e in examples)
    return text


def _run(settings: Settings, suite: Suite, frame, run_day: date, result_format: str, now: datetime):
    """One GX validation of ``frame`` against the suite; stored under the run name ``<gate>-<run_day>``."""
    load_gx()
    from great_expectations.core.run_identifier import RunIdentifier

    definition = _validation_definition(
        _context(settings.quality_dir), f"{suite.gate}.{suite.subject}", suite
    )
    return definition.run(
        batch_parameters={"dataframe": _whole_column_types(frame)},
        result_format={"result_format": result_format, "partial_unexpected_count": SAMPLE_ROWS},
        run_id=RunIdentifier(run_name=f"{suite.gate}-{run_day.isoformat()}", run_time=now),
    )


def _whole_column_types(frame):
    """``frame`` with its columns in the types GX compares as whole columns: numpy int64 and float64, and
    date-times in nanoseconds where they fit. Any other column GX's range checks compare value by value in
    Python: at 1M members, dim_member's first_seen_on (microseconds from DuckDB, 1.3 million values) and
    member_features' nullable day counts (pandas Int64, 1.8 million non-null values) were 10 s of the
    marts gate.

    Nullable integers become float64 with NaN for a missing value, which GX counts as missing just as it
    does pd.NA; only columns whose values float64 holds exactly (|v| < 2**53) are converted. The findings'
    sample rows come from the caller's frame, so they show the values as stored."""
    import numpy as np
    import pandas as pd

    converted = {}
    for column, dtype in frame.dtypes.items():
        if pd.api.types.is_datetime64_any_dtype(dtype) and _time_unit(dtype) != "ns":
            tz = getattr(dtype, "tz", None)
            with contextlib.suppress(pd.errors.OutOfBoundsDatetime, OverflowError):  # (a year 9999 stays)
                converted[column] = frame[column].astype(f"datetime64[ns, {tz}]" if tz else "datetime64[ns]")
        elif isinstance(dtype, pd.api.extensions.ExtensionDtype) and pd.api.types.is_integer_dtype(dtype):
            values = frame[column]
            if values.isna().all() or values.abs().max() < 2**53:
                converted[column] = values.to_numpy(dtype="float64", na_value=np.nan)
        elif isinstance(dtype, pd.api.extensions.ExtensionDtype) and pd.api.types.is_float_dtype(dtype):
            converted[column] = frame[column].to_numpy(dtype="float64", na_value=np.nan)
        elif isinstance(dtype, np.dtype) and dtype.kind in "iu" and dtype != np.int64:
            if dtype.kind == "i" or dtype.itemsize < 8:  # (a uint64 column may not fit)
                converted[column] = frame[column].astype("int64")
        elif isinstance(dtype, np.dtype) and dtype.kind == "f" and dtype != np.float64:
            converted[column] = frame[column].astype("float64")
    return frame.assign(**converted) if converted else frame


def _time_unit(dtype) -> str:
    """A date-time dtype's unit: pandas' zoned dtype carries it, a numpy datetime64 in its name."""
    import numpy as np

    return getattr(dtype, "unit", None) or np.datetime_data(dtype)[0]


def _column(kwargs: dict) -> str | None:
    """The column a finding is about; a batch's partition column is bookkeeping, not shown."""
    if kwargs.get("column"):
        return kwargs["column"]
    if "column_list" in kwargs:
        return ",".join(c for c in kwargs["column_list"] if c != PARTITION)
    return kwargs.get("column_B")  # a pair check: column_A is the bound (e.g. the partition's day end)


def _examples(frame, column: str, indices: Sequence) -> list:
    """The checked value(s) of the rows at ``indices``, as the frame holds them."""
    shown = [c for c in column.split(",") if c in frame]
    return [
        _plain(row[0] if len(row) == 1 else dict(zip(shown, row, strict=True)))
        for row in frame.loc[list(indices), shown].itertuples(index=False, name=None)
    ]


def _samples(suite: Suite, frame, column: str | None, indices: Sequence) -> list[dict[str, Any]]:
    """Up to SAMPLE_ROWS offending rows: the suite's identifying columns and the checked one(s)."""
    indices = list(indices)[:SAMPLE_ROWS]
    wanted = [c for c in dict.fromkeys([*suite.sample_columns, *(column or "").split(",")]) if c in frame]
    if not indices or not wanted:
        return []
    return [{k: _plain(v) for k, v in row.items()} for row in frame.loc[indices, wanted].to_dict("records")]


def _finding(outcome, success: bool, observed: str, samples: list[dict[str, Any]]) -> Finding:
    meta = outcome.expectation_config.meta or {}
    return Finding(
        check=meta["check"],
        severity=meta["severity"],
        expectation=outcome.expectation_config.type,
        column=_column(outcome.expectation_config.kwargs),
        about=meta["about"],
        success=success,
        observed=observed,
        samples=samples,
    )


def _keep(
    settings: Settings, outcome: SuiteResult, gx_result=None, gx_path: Path | None = None
) -> SuiteResult:
    """Write the suite's findings (and GX's full result, when given) beside the date's other results."""
    folder = results_dir(settings, outcome.gate, date.fromisoformat(outcome.date))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{outcome.subject}.json"
    outcome.result_path = str(target)
    if gx_result is not None:
        gx_path = folder / f"{outcome.subject}.gx.json"
        gx_path.write_text(json.dumps(gx_result.to_json_dict(), indent=1, default=str) + "\n")
    if gx_path is not None:
        outcome.gx_result_path = str(gx_path)
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(outcome.to_dict(), indent=2, ensure_ascii=False, default=str) + "\n")
    tmp.replace(target)
    for message in outcome.messages():
        log.warning("%s", message)
    return outcome


def validate(settings: Settings, suite: Suite, day: date, frame) -> SuiteResult:
    """Validate ``frame`` (pandas) against the suite's checks; keep the JSON results; return the findings."""
    now = datetime.now(UTC)
    findings: list[Finding] = []
    gx_result = None
    if suite.checks:
        gx_result = _run(settings, suite, frame, day, "SUMMARY", now)
        for outcome in gx_result.results:
            result = outcome.result or {}
            column = _column(outcome.expectation_config.kwargs)
            indices = () if outcome.success else result.get("partial_unexpected_index_list") or ()
            whole = bool(indices) and column and all(c in frame for c in column.split(","))
            examples = _examples(frame, column, list(indices)[:3]) if whole else None
            findings.append(
                _finding(
                    outcome,
                    bool(outcome.success),
                    _observed(result, outcome.exception_info, examples),
                    _samples(suite, frame, column, indices),
                )
            )
    outcome = SuiteResult(
        suite.gate, suite.subject, day.isoformat(), findings, list(suite.notes), len(frame), now.isoformat()
    )
    return _keep(settings, outcome, gx_result)


def validate_partitions(
    settings: Settings, suite: Suite, frame, days: Sequence[date]
) -> dict[date, SuiteResult]:
    """Validate a batch of one subject's partitions in one GX run; the findings are kept per partition.

    ``frame`` holds the rows of every partition in ``days``, each row's partition in the ``PARTITION``
    column (ISO date text). GX's cost is per expectation, not per row, so one run over the batch costs
    about what one partition did. A check about every row runs once over all rows and GX's complete result
    (every offending row's index) is split per partition: each partition gets its own count, samples and
    success, ``mostly`` applied to its own rows. A check about one partition (a median, the row count) is
    an expectation of its own, restricted to that partition's rows. Each partition's result is written to
    its date's folder; GX's full result once, beside the newest partition's, under that date's run name.
    """
    now = datetime.now(UTC)
    days = sorted(days)
    findings: dict[date, list[Finding]] = {day: [] for day in days}
    gx_result = None
    partition_of = frame[PARTITION]
    sizes = {day: 0 for day in days}
    sizes.update({date.fromisoformat(k): int(v) for k, v in partition_of.value_counts().items()})
    if suite.checks:
        # each partition's row positions, found once (a comparison per partition and check was most of
        # the time of a month's batch)
        found = partition_of.groupby(partition_of, sort=False).indices
        rows_of = {day: found.get(day.isoformat(), np.array([], dtype=np.int64)) for day in days}
        day_of = np.empty(len(frame), dtype=object)
        for day, positions in rows_of.items():
            day_of[positions] = day
        gx_result = _run(settings, suite, frame, days[-1], "COMPLETE", now)
        for outcome in gx_result.results:
            meta = outcome.expectation_config.meta or {}
            result = outcome.result or {}
            if "partition" in meta:  # about one partition: its result is that partition's finding
                day = date.fromisoformat(meta["partition"])
                findings[day].append(
                    _finding(outcome, bool(outcome.success), _observed(result, outcome.exception_info), [])
                )
                continue
            for day, finding in _split(suite, frame, rows_of, day_of, days, outcome).items():
                findings[day].append(finding)
    results = {}
    gx_path = results_dir(settings, suite.gate, days[-1]) / f"{suite.subject}.gx.json"
    for day in days:
        outcome = SuiteResult(
            suite.gate,
            suite.subject,
            day.isoformat(),
            findings[day],
            [*suite.notes, *suite.partition_notes.get(day, [])],
            sizes[day],
            now.isoformat(),
        )
        newest = day == days[-1]
        results[day] = _keep(
            settings,
            outcome,
            gx_result if newest else None,
            gx_path if gx_result is not None and not newest else None,
        )
    return results


def _split(
    suite: Suite, frame, rows_of: dict[date, np.ndarray], day_of: np.ndarray, days: Sequence[date], outcome
) -> dict:
    """One row-level expectation's result over a batch, as one finding per partition (``rows_of``: each
    partition's row positions in ``frame``, whose index is its positions; ``day_of``: each row's
    partition)."""
    result = outcome.result or {}
    error = _error(outcome.exception_info)
    if error or "unexpected_count" not in result:
        # not evaluated (or not a row check after all): every partition shares the verdict
        observed = _observed(result, outcome.exception_info)
        return {day: _finding(outcome, bool(outcome.success), observed, []) for day in days}
    kwargs = outcome.expectation_config.kwargs
    mostly = float(kwargs.get("mostly") or 1.0)
    column = _column(kwargs)
    checked = [c for c in (kwargs.get("column"), kwargs.get("column_A"), kwargs.get("column_B")) if c]
    present = frame[checked].notna().all(axis=1).to_numpy() if checked else None
    unexpected: dict[date, list[int]] = {day: [] for day in days}
    for position in result.get("unexpected_index_list") or []:
        unexpected[day_of[position]].append(position)
    split = {}
    for day in days:
        total = len(rows_of[day])
        nonmissing = int(present[rows_of[day]].sum()) if present is not None else total
        bad = unexpected[day]
        success = not nonmissing or (nonmissing - len(bad)) / nonmissing >= mostly
        share = 100.0 * len(bad) / nonmissing if nonmissing else 0.0
        observed = f"{len(bad):,} of {total:,} rows unexpected ({share:.2f}%)"
        if bad and column:
            examples = _examples(frame, column, bad[:3])
            observed += ", e.g. " + ", ".join(json.dumps(e, ensure_ascii=False) for e in examples)
        split[day] = _finding(outcome, bool(success), observed, _samples(suite, frame, column, bad))
    return split


def build_data_docs(settings: Settings, gate: str, days: Iterable[date]) -> Path:
    """Render the Data Docs pages of this gate's validations for the dates, and the site index.

    Rendering is the slow part of GX (about 0.5 s a call), so callers render once per batch of validations.
    """
    context = _context(settings.quality_dir)
    run_names = {f"{gate}-{day.isoformat()}" for day in days}
    keys = {k for k in context.validation_results_store.list_keys() if k.run_id.run_name in run_names}
    if keys:
        # a set: GX tests every stored key for membership, and a list made that quadratic
        context.build_data_docs(resource_identifiers=keys)
    return docs_index(settings)


def gate_result(
    settings: Settings, gate: str, day: date, suites: Iterable[SuiteResult], record: bool = True
) -> GateResult:
    """The gate's verdict over its suites; ``record`` keeps it as ``_gate.json`` beside the results."""
    result = GateResult(gate, day.isoformat(), list(suites), str(docs_index(settings)))
    if not record:
        return result
    summary = results_dir(settings, gate, day) / "_gate.json"
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(
        json.dumps(
            {
                "gate": gate,
                "date": result.date,
                "status": result.status,
                "subjects": {s.subject: s.status for s in result.suites},
                "docs": result.docs_path,
            },
            indent=2,
        )
        + "\n"
    )
    return result


def load_results(settings: Settings, gate: str, day: date) -> list[SuiteResult]:
    folder = results_dir(settings, gate, day)
    return [
        SuiteResult.from_dict(json.loads(p.read_text()))
        for p in sorted(folder.glob("*.json"))
        if not p.name.startswith("_") and not p.name.endswith(".gx.json")
    ]


def latest_result_day(settings: Settings, gate: str) -> date | None:
    return max(partition_days(settings.quality_dir / "results" / gate), default=None)
