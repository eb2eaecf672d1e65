"""Landing one partition end to end, as the CLI does it: extract → landing quality gate → publish.

The extract DAG runs the same three steps as separate tasks; this module strings them together for
``memberflow extract`` and ``memberflow build`` so a scripted run cannot skip the gate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from expectations.landing import audit_and_publish
from expectations.runner import QualityGateError, build_data_docs
from memberflow.core.contracts import CONTRACTS, TableContract
from memberflow.core.settings import Settings
from memberflow.extract import (
    ExtractReport,
    MissingPartitionError,
    QuarantineThresholdError,
    extract_table,
    pending_partitions,
)


@dataclass
class LandingRun:
    """What a batch of partitions came to: reports of extracted tables and errors by partition."""

    reports: list[ExtractReport] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # "<channel>.<table> <date>" -> message
    warnings: list[str] = field(default_factory=list)  # warning-level quality findings
    days: set[date] = field(default_factory=set)
    docs_path: str = ""

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def published(self) -> int:
        return sum(report.status == "ok" for report in self.reports)

    def failed_kind(self) -> int:
        """Exit status: 2 when only partitions are missing, else 1."""
        missing = all("no partition" in m for m in self.errors.values())
        return 2 if self.errors and missing else (1 if self.errors else 0)


def land_partition(
    settings: Settings,
    contract: TableContract,
    day: date,
    data_dir: Path | None = None,
    run: LandingRun | None = None,
) -> LandingRun:
    """Extract, gate and publish one table's partition; problems are recorded in ``run``, not raised."""

    run = run if run is not None else LandingRun()
    name = f"{contract.name} {day.isoformat()}"
    run.days.add(day)
    try:
        report = extract_table(settings, contract, day, data_dir)
        run.reports.append(report)
        gate = audit_and_publish(settings, contract, day)
        report.status, report.quality = "ok", gate.status
        run.warnings += gate.messages("warning")
    except (MissingPartitionError, QuarantineThresholdError, QualityGateError) as exc:
        run.errors[name] = str(exc)
    return run


def land_days(
    settings: Settings,
    days: Sequence[date],
    data_dir: Path | None = None,
    tables: Sequence[TableContract] = CONTRACTS,
) -> LandingRun:
    """Land every table for each day; a failing partition does not stop the others.

    Data Docs are rendered once, at the end."""
    run = LandingRun()
    for day in days:
        for contract in tables:
            land_partition(settings, contract, day, data_dir, run)
    _docs(settings, run)
    return run


def land_pending(settings: Settings, data_dir: Path, until: date | None = None) -> LandingRun:
    """Land every source partition not published yet (up to ``until``), oldest first."""
    run = LandingRun()
    for day, contract in pending_partitions(settings, data_dir, until):
        land_partition(settings, contract, day, data_dir, run)
    _docs(settings, run)
    return run


def _docs(settings: Settings, run: LandingRun) -> None:
    if run.days:
        run.docs_path = str(build_data_docs(settings, "landing", run.days))
