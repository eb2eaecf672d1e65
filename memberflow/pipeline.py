"""The pipeline: one function per arrow of the flow, each a stage followed by the gate that publishes it.

    land        channel sources → extract → landing gate → published partitions
    gate_marts  the warehouse dbt built → marts gate → published marts (the transform DAG's last step)
    build       land what is pending, dbt build, gate_marts (``memberflow build``)
    score_model champion → member_scores, for one model (nothing when it has no champion yet)
    gate_scores the day's member_scores → scores gate → published scores

The DAGs run each step as its own task (one per table, dbt model or model); the CLI, the benchmark harness
and the tests call the same functions, so a scripted run cannot skip a gate. Delivery's arrow is
``memberflow.outreach.run.deliver``.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from expectations.config import QualityConfig
from expectations.landing import audit_partitions
from expectations.marts import gate_warehouse
from expectations.runner import GateResult, build_data_docs
from memberflow.core.contracts import CONTRACTS, TableContract, get_contract
from memberflow.core.settings import Settings
from memberflow.extract import (
    ExtractReport,
    MissingPartitionError,
    PartitionRefusedError,
    extract_table,
    pending_partitions,
    publish_partition,
)
from memberflow.transform import (
    DbtResult,
    build_warehouse,
    latest_landed_day,
    record_incremental_build,
    save_identity_snapshot,
)
from memberflow.warehouse import landing_lock
from ml.registry import NoChampionError
from ml.score import ScoreResult, score


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


def _running() -> str:
    """This process's command, for the landing lock's message (e.g. ``memberflow build``)."""
    return " ".join([Path(sys.argv[0]).name, *sys.argv[1:2]])


# A landing of at least this many partitions (a backfill) lands its tables in parallel processes, up to
# ``Settings.landing_workers``; a daily landing stays in one process (each process pays Great Expectations'
# start-up, several seconds).
PARALLEL_FROM = 60


def land_partitions(
    settings: Settings,
    partitions: Sequence[tuple[date, TableContract]],
    data_dir: Path | None = None,
) -> LandingRun:
    """Extract each partition, gate each table's staged ones together (in batches: one Great Expectations
    run covers many days) and publish those that pass. A failing partition does not stop the others; its
    problem is recorded in the run, not raised. Tables are independent (each its own partitions and
    checks), so a backfill can land them in parallel processes (``Settings.landing_workers``); the run is
    the same either way. Data Docs are rendered once, at the end.
    Callers hold the landing lock (``land_days``, ``land_pending``)."""
    config = QualityConfig.load()  # a bad MEMBERFLOW_QUALITY_CONFIG stops the run before anything lands
    # the keys extraction uses, made (a new workspace) or checked here, once: processes landing tables side
    # by side would each make a different one
    settings.id_key()
    settings.vault_key()
    by_table: dict[str, tuple[TableContract, list[date]]] = {}
    for day, contract in partitions:
        by_table.setdefault(contract.name, (contract, []))[1].append(day)
    jobs = list(by_table.values())
    workers = min(settings.landing_workers, len(jobs)) if len(partitions) >= PARALLEL_FROM else 1
    if workers > 1:
        # spawn, not fork: the parent may hold DuckDB connections and threads (Airflow, the API)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            # the largest tables start first, so the last one to finish is a small one
            order = sorted(jobs, key=lambda job: -_source_bytes(settings, job[0], data_dir))
            futures = {c.name: pool.submit(_land_table, settings, c, d, data_dir, config) for c, d in order}
            try:
                parts = [futures[contract.name].result() for contract, _ in jobs]
            except BrokenProcessPool as exc:
                raise RuntimeError(
                    "a landing process ended abruptly: out of memory, killed, or started from a Python "
                    "script without `if __name__ == '__main__':` (each landing process imports the script "
                    "again). Land with fewer processes (MEMBERFLOW_LANDING_WORKERS=1 lands in this one)."
                ) from exc
    else:
        parts = [_land_table(settings, contract, days, data_dir, config) for contract, days in jobs]
    run = LandingRun()
    for part in parts:
        run.reports += part.reports
        run.errors.update(part.errors)
        run.warnings += part.warnings
        run.days |= part.days
    run.reports.sort(key=lambda r: (r.date, r.channel, r.table))
    _docs(settings, run)
    return run


def _source_bytes(settings: Settings, contract: TableContract, data_dir: Path | None) -> int:
    folder = (data_dir or settings.data_dir) / contract.channel / contract.table
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def _land_table(
    settings: Settings,
    contract: TableContract,
    days: Sequence[date],
    data_dir: Path | None,
    config: QualityConfig,
) -> LandingRun:
    """One table's part of ``land_partitions``: extract its days, gate them in batches, publish."""
    run = LandingRun()
    staged: dict[date, ExtractReport] = {}
    for day in sorted(set(days)):
        run.days.add(day)
        try:
            staged[day] = extract_table(settings, contract, day, data_dir)
        except (MissingPartitionError, PartitionRefusedError) as exc:
            run.errors[f"{contract.name} {day.isoformat()}"] = str(exc)
            continue
        run.warnings += [
            f"{contract.name} {day.isoformat()}: {name} not read: {reason}"
            for name, reason in staged[day].refused_files.items()
        ] + ([staged[day].message] if staged[day].message else [])
    for day, gate in audit_partitions(settings, contract, list(staged), config).items():
        report = staged[day]
        run.reports.append(report)
        if not gate.ok:
            run.errors[f"{contract.name} {day.isoformat()}"] = gate.explain()
            continue
        publish_partition(settings, contract, day, quality=gate.status)
        report.status, report.quality = "ok", gate.status
        run.warnings += gate.messages("warning")
    return run


def land_days(
    settings: Settings,
    days: Sequence[date],
    data_dir: Path | None = None,
    tables: Sequence[TableContract] = CONTRACTS,
) -> LandingRun:
    """Land every table for each day (see ``land_partitions``); WorkspaceBusy while another run lands."""
    with landing_lock(settings, _running()):
        return land_partitions(settings, [(day, contract) for day in days for contract in tables], data_dir)


def land_pending(settings: Settings, data_dir: Path, until: date | None = None) -> LandingRun:
    """Land every source partition not published yet, or whose files changed since (up to ``until``)."""
    with landing_lock(settings, _running()):
        return land_partitions(settings, pending_partitions(settings, data_dir, until), data_dir)


def land_fresh_consent(settings: Settings, as_of: date) -> LandingRun:
    """Right before a delivery: land the consent partitions up to its date that are new or changed in the
    channel folder (the delivery day's own, as far as it has arrived), so an opt-out given this morning or
    added late to a landed day counts. Consent rows land even when others in their partition are bad."""
    consent = [get_contract("consent", "events")]
    with landing_lock(settings, _running()):
        pending = pending_partitions(settings, settings.data_dir, as_of, consent)
        return land_partitions(settings, pending, settings.data_dir)


def _docs(settings: Settings, run: LandingRun) -> None:
    if run.days:
        run.docs_path = str(build_data_docs(settings, "landing", run.days))


# --- transform: the warehouse and its marts gate -----------------------------------------------------------


@dataclass
class BuildOutcome:
    dbt: DbtResult
    gate: GateResult


def gate_marts(settings: Settings, day: date | None = None) -> GateResult:
    """The marts gate on what dbt built, as of ``day`` (default: the newest landed day); publishes the
    marts or raises QualityGateError. Without a day (a full build, as the transform DAG runs it) every dbt
    model succeeded, so the landing they built from becomes the next incremental build's base first."""
    if day is None:
        record_incremental_build(settings)
    day = day or latest_landed_day(settings)
    if day is None:
        raise NothingLandedError("nothing has been landed: no marts to validate")
    return gate_warehouse(settings, day)


class NothingLandedError(RuntimeError):
    """A gate was asked to validate a warehouse built from nothing."""


def build(
    settings: Settings,
    as_of: date | None = None,
    feature_dates: Sequence[date] = (),
    full_refresh: bool = False,
) -> BuildOutcome:
    """dbt build of the warehouse, then the marts gate (raises DbtError or QualityGateError). A full build
    (no ``as_of``) that passes keeps its identity snapshot, which the next build's split detection reads."""
    result = build_warehouse(settings, as_of, feature_dates, snapshot=False, full_refresh=full_refresh)
    gate = gate_marts(settings, as_of)  # on the serving store, whichever target built it
    if as_of is None:
        save_identity_snapshot(settings)
    return BuildOutcome(result, gate)


# --- scoring and its gate ----------------------------------------------------------------------------


def score_model(settings: Settings, model: str, as_of: date) -> ScoreResult | None:
    """Score the model's population with its champion; None when the model has no champion yet."""
    try:
        return score(settings, model, as_of)
    except NoChampionError:
        return None


def gate_scores(settings: Settings, as_of: date) -> GateResult:
    """The scores gate on the day's member_scores; publishes them or raises QualityGateError."""
    return gate_warehouse(settings, as_of, gate="scores")
