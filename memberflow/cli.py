"""The ``memberflow`` command: one entry point for every stage, calling the same functions as the DAGs."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from memberflow.core.settings import ConfigError, Settings, apply_privacy_defaults, get_settings

app = typer.Typer(
    help=(
        "memberflow: member intelligence for private-domain health and wellness brands.\n\n"
        "Generates sample channel data, lands channel exports (bad rows quarantined with a reason, phones "
        "tokenized), builds the member warehouse with dbt (One ID, tags, features), trains and scores "
        "propensity models (LightGBM, MLflow), builds segments and delivers them (file, webhook, WeCom, SMS) "
        "without sending twice, and runs it all through Airflow. "
        "Everything is written under MEMBERFLOW_HOME (default ./.memberflow)."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
console = Console()
err = Console(stderr=True)


def _parse_date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date of the form YYYY-MM-DD") from None


def _settings() -> Settings:
    apply_privacy_defaults()
    try:
        return get_settings()
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


@app.command()
def generate(
    members: Annotated[
        int, typer.Option(min=1, help="How many people the brand touches over the period.")
    ] = 2000,
    start: Annotated[
        str, typer.Option(help="First day of data, YYYY-MM-DD (China local date).")
    ] = "2026-01-01",
    days: Annotated[int, typer.Option(min=1, help="How many days of data.")] = 90,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed and ID key give the same bytes.")] = 7,
    out: Annotated[Path | None, typer.Option(help="Where to write; default $MEMBERFLOW_HOME/sample.")] = None,
    dirt_rate: Annotated[
        float, typer.Option(min=0.0, max=0.2, help="Share of rows with planted defects.")
    ] = 0.02,
) -> None:
    """Write sample data for all twelve landing tables, plus the ground truth under _truth/."""
    settings = _settings()
    summary = _generate(
        settings, members, _parse_date(start), days, seed, out or settings.data_dir, dirt_rate
    )
    table = Table(title=f"sample data in {summary.out}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in summary.rows.items():
        table.add_row(name, f"{rows:,}")
    console.print(table)
    console.print(
        f"planted defects: {sum(summary.dirt.values()):,} (see {summary.out / '_truth' / 'dirt.json'})"
    )


def _generate(
    settings: Settings, members: int, start: date, days: int, seed: int, out: Path, dirt_rate: float
):
    from rich.progress import Progress

    from devkit.generate import GenerateConfig
    from devkit.generate import generate as run

    config = GenerateConfig(members, start, days, seed, Path(out).resolve(), dirt_rate)
    began = time.perf_counter()
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"generating {members:,} members × {days} days", total=days)
        summary = run(config, settings.id_key(), on_day=lambda _: progress.advance(task))
    console.print(f"generated {members:,} members × {days} days in {time.perf_counter() - began:.1f} s")
    return summary


@app.command()
def extract(
    date_: Annotated[str, typer.Option("--date", help="Local date to land, YYYY-MM-DD.")],
    data_dir: Annotated[
        Path | None, typer.Option(help="Channel source folder; default MEMBERFLOW_DATA_DIR.")
    ] = None,
    to: Annotated[
        str | None, typer.Option(help="Last date of a range to land (inclusive), for backfills.")
    ] = None,
    table: Annotated[
        list[str] | None, typer.Option(help="Only these tables (channel.table); repeatable. Default: all.")
    ] = None,
) -> None:
    """Land channel tables for a date (or a range) without Airflow: extract, landing quality gate, publish.

    Prints read/landed/quarantined and the gate's verdict per table. Exits 1 when a table quarantines more
    than its limit or fails a critical quality check (the date's published data is then left as it was),
    2 when a partition is missing.
    """
    from memberflow.core.contracts import CONTRACTS, get_contract
    from memberflow.land import land_days

    settings = _settings()
    first = _parse_date(date_)
    last = _parse_date(to) if to else first
    if last < first:
        raise typer.BadParameter("--to is before --date")
    try:
        contracts = [get_contract(*name.split(".", 1)) for name in table] if table else list(CONTRACTS)
    except (KeyError, TypeError) as exc:
        raise typer.BadParameter(str(exc)) from None
    days = [first + timedelta(days=d) for d in range((last - first).days + 1)]
    run = _with_quality_config(lambda: land_days(settings, days, data_dir, contracts))
    _print_landing(run)
    raise typer.Exit(run.failed_kind())


def _with_quality_config(action):
    """Run ``action``; an unusable MEMBERFLOW_QUALITY_CONFIG is a configuration error (exit 2)."""
    try:
        return action()
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None


def _print_landing(run) -> None:
    table = Table(title="landed partitions")
    for column in ("table", "date", "read", "landed", "quarantined", "quality", "reasons"):
        table.add_column(
            column,
            justify="right" if column in ("read", "landed", "quarantined") else "left",
            no_wrap=column in ("table", "date", "quality"),
            min_width=20 if column == "table" else None,
        )
    for report in run.reports:
        reasons = ", ".join(f"{k} {v}" for k, v in report.by_reason.items())
        quality = {"ok": report.quality or "passed"}.get(report.status, f"[red]{report.status}[/red]")
        table.add_row(
            f"{report.channel}.{report.table}",
            report.date,
            f"{report.read:,}",
            f"{report.landed:,}",
            f"{report.quarantined:,}",
            quality,
            reasons,
        )
    if run.reports:
        console.print(table)
    # soft_wrap: a finding stays one line, whole, for people and for grep
    for message in run.warnings:
        err.print(f"[yellow]warning: {escape(message)}[/yellow]", soft_wrap=True)
    for message in run.errors.values():
        err.print(f"[red]{escape(message)}[/red]", soft_wrap=True)
    if run.docs_path:
        console.print(f"quality results: {_settings().quality_dir / 'results' / 'landing'}")
        console.print(f"Data Docs:       {run.docs_path}")


class DbtTarget(StrEnum):
    duckdb = "duckdb"
    postgres = "postgres"


@app.command()
def build(
    data_dir: Annotated[
        Path | None, typer.Option(help="Channel source folder; default MEMBERFLOW_DATA_DIR.")
    ] = None,
    as_of: Annotated[
        str | None, typer.Option(help="Build as of this date (YYYY-MM-DD): only data landed on or before it.")
    ] = None,
    feature_date: Annotated[
        list[str] | None,
        typer.Option(help="Compute member_features as of this date (strictly-before data); repeatable."),
    ] = None,
    target: Annotated[
        DbtTarget | None,
        typer.Option(
            help="dbt target: duckdb (the warehouse file) or postgres (MEMBERFLOW_PG_* settings); "
            "default MEMBERFLOW_DBT_TARGET, else duckdb.",
        ),
    ] = None,
) -> None:
    """Land every source partition not published yet (each through the landing quality gate), build the
    warehouse with dbt (models and tests), then run the marts quality gate.

    Exits 1 when a partition quarantines too much or fails its quality gate (nothing is built), when a dbt
    model or test fails, or when a critical marts check fails (the marts are then not published, and
    training, scoring and delivery refuse to use them).

    With the postgres target the landing zone is loaded into the database and the dbt project (with all
    its tests) is built there; the marts gate, scoring, segments and the ops API read the DuckDB
    warehouse and do not run on it yet (docs/scaling.md).
    """
    if target:
        os.environ["MEMBERFLOW_DBT_TARGET"] = target.value
    from expectations.marts import gate_warehouse
    from expectations.runner import QualityGateError
    from memberflow.core.settings import PgSettings, PgSettingsError, postgres_target
    from memberflow.land import land_pending
    from memberflow.transform import DbtError, build_warehouse, latest_landed_day, save_identity_snapshot

    if postgres_target():
        try:
            PgSettings.from_env()
        except PgSettingsError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    settings = _settings()
    source = Path(data_dir or settings.data_dir)
    cutoff = _parse_date(as_of) if as_of else None
    run = _with_quality_config(lambda: land_pending(settings, source, cutoff))
    console.print(f"landed {run.published} pending partitions from {source}")
    if run.errors or run.warnings:
        _print_landing(run)
    if run.errors:
        err.print("[red]not building: fix or quarantine the failed partitions first[/red]")
        raise typer.Exit(1)
    began = time.perf_counter()
    try:
        result = build_warehouse(
            settings, cutoff, [_parse_date(d) for d in feature_date or []], snapshot=False
        )
    except DbtError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    console.print(
        f"dbt build: {result.succeeded} models and tests passed in {time.perf_counter() - began:.1f} s"
    )
    if postgres_target():
        if cutoff is None:
            save_identity_snapshot(settings)
        _print_postgres_marts()
        return
    gate_day = cutoff or latest_landed_day(settings)
    if gate_day is None:
        err.print("[red]nothing has been landed: no marts to validate[/red]")
        raise typer.Exit(1)
    try:
        gate = _with_quality_config(lambda: gate_warehouse(settings, gate_day))
    except QualityGateError as exc:
        err.print(
            f"[red]marts quality gate failed; the marts are not published:\n{escape(str(exc))}[/red]",
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    for message in gate.messages("warning"):
        err.print(f"[yellow]warning: {escape(message)}[/yellow]", soft_wrap=True)
    if cutoff is None:
        # split detection compares the next build with published marts only
        save_identity_snapshot(settings)
    console.print(f"marts quality gate {gate.status} for {gate_day}; Data Docs: {gate.docs_path}")
    _print_warehouse(settings)


def _print_postgres_marts() -> None:
    from memberflow.core.settings import PgSettings
    from memberflow.postgres import read_relation

    pg = PgSettings.from_env()
    table = Table(title=f"PostgreSQL marts ({pg.database}.{pg.schema})")
    table.add_column("mart")
    table.add_column("rows", justify="right")
    for mart in ("dim_member", "member_identifiers", "member_tags", "member_features", "fct_orders"):
        rows = read_relation(pg, f"select count(*) as n from {pg.schema}.{mart}")["n"][0]
        table.add_row(mart, f"{rows:,}")
    console.print(table)
    console.print(
        "the dbt tests gated this build; the marts gate, scoring and delivery read the DuckDB warehouse"
    )


def _print_identity(settings: Settings) -> None:
    from memberflow.identity_report import identity_report

    _print_identity_report(identity_report(settings))


def _print_identity_report(report) -> None:
    console.print(
        f"members: {report.members:,}   identifiers: {report.identifiers:,}   "
        f"merges recorded: {report.merges:,}   weak candidate links: {report.candidate_links:,}"
    )
    sizes = Table(title="identifiers per member")
    sizes.add_column("size")
    sizes.add_column("members", justify="right")
    for label, count in report.cluster_sizes.items():
        sizes.add_row(label, f"{count:,}")
    console.print(sizes)
    console.print(
        "singletons by channel: " + ", ".join(f"{k} {v:,}" for k, v in report.singletons_by_channel.items())
    )
    console.print(
        "dropped edges: " + (", ".join(f"{k} {v:,}" for k, v in report.dropped_by_reason.items()) or "none")
    )
    for member_id, size in report.oversize:
        console.print(f"[yellow]oversize member {member_id}: {size} identifiers[/yellow]")
    if report.truth is not None:
        t = report.truth
        console.print(
            f"against truth ({t.identifiers_scored:,} identifiers): pairwise precision {t.precision:.4f} "
            f"({t.correct_pairs:,}/{t.predicted_pairs:,}), recall {t.recall:.4f} "
            f"({t.correct_pairs:,}/{t.true_pairs_linkable:,} linkable pairs)"
        )
    for note in report.notes:
        console.print(note)


def _print_warehouse(settings: Settings) -> None:
    from memberflow.summary import warehouse_counts

    table = Table(title=f"warehouse {settings.warehouse_path}")
    table.add_column("table")
    table.add_column("rows", justify="right")
    for name, rows in warehouse_counts(settings).items():
        table.add_row(name, f"{rows:,}")
    console.print(table)


identity_app = typer.Typer(
    help="One ID: audit how identifiers were stitched into members.", no_args_is_help=True
)
app.add_typer(identity_app, name="identity")


@identity_app.command("report")
def identity_report_command(
    data_dir: Annotated[
        Path | None, typer.Option(help="Channel source folder whose _truth/ is used for scoring, if present.")
    ] = None,
) -> None:
    """Cluster sizes, oversize clusters, singletons per channel, dropped edges; precision/recall vs truth."""
    from memberflow.identity_report import identity_report

    settings = _settings()
    try:
        report = identity_report(settings, data_dir)
    except FileNotFoundError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    _print_identity_report(report)


quality_app = typer.Typer(
    help="Quality gates (Great Expectations): what the landing, marts, scores and segments gates found.",
    no_args_is_help=True,
)
app.add_typer(quality_app, name="quality")


@quality_app.command("report")
def quality_report_command(
    date_: Annotated[
        str | None, typer.Option("--date", help="Results of this date (YYYY-MM-DD); default the latest.")
    ] = None,
    gate: Annotated[
        list[str] | None,
        typer.Option(help="Only this gate (landing, marts, scores, segments); repeatable. Default: all."),
    ] = None,
) -> None:
    """Show the latest results of each quality gate: status per table, failed checks with masked sample rows.

    Exits 1 when a shown gate has a critical failure, 2 when there are no results for the date.
    """
    from expectations.runner import docs_index, latest_result_day, load_results

    settings = _settings()
    wanted = _parse_date(date_) if date_ else None
    gates = gate or ["landing", "marts", "scores", "segments"]
    shown, failed = 0, False
    for name in gates:
        day = wanted or latest_result_day(settings, name)
        results = load_results(settings, name, day) if day else []
        if not results:
            err.print(f"no {name} gate results" + (f" for {day}" if day else ""))
            continue
        shown += 1
        table = Table(title=f"{name} gate, {day}")
        for column in ("subject", "status", "rows", "checks", "failed", "notes"):
            table.add_column(column, justify="right" if column in ("rows", "checks", "failed") else "left")
        colour = {"passed": "green", "warning": "yellow", "failed": "red"}
        for result in results:
            table.add_row(
                result.subject,
                f"[{colour[result.status]}]{result.status}[/{colour[result.status]}]",
                f"{result.rows:,}",
                str(len(result.findings)),
                str(len(result.failures)),
                "; ".join(result.notes),
            )
        console.print(table)
        for result in results:
            failed |= result.status == "failed"
            for finding in result.failures:
                style = "red" if finding.severity == "critical" else "yellow"
                console.print(
                    f"[{style}]{result.subject}: {escape(finding.describe())}[/{style}]", soft_wrap=True
                )
                for row in finding.samples:
                    console.print(f"    {row}", soft_wrap=True, markup=False)
        console.print(f"results: {settings.quality_dir / 'results' / name / f'dt={day}'}")
    if shown:
        console.print(f"Data Docs: {docs_index(settings)}")
    raise typer.Exit(2 if not shown else (1 if failed else 0))


@app.command()
def demo(
    members: Annotated[int, typer.Option(min=1, help="People in the sample.")] = 2000,
    days: Annotated[int, typer.Option(min=1, help="Days of sample data; each day is one Airflow run.")] = 60,
    start: Annotated[str, typer.Option(help="First day of the sample, YYYY-MM-DD.")] = "2026-01-01",
    seed: Annotated[int, typer.Option(help="Random seed of the sample.")] = 7,
    serve_after: Annotated[
        bool, typer.Option("--serve", help="Keep serving the ops page and API afterwards (Ctrl-C stops).")
    ] = False,
    port: Annotated[int, typer.Option(help="Port of the ops page with --serve.")] = 8700,
) -> None:
    """Generate sample data and run every pipeline through Airflow, one daily run per day, then summarize.

    Uses the embedded defaults: workspace under MEMBERFLOW_HOME, Airflow on SQLite in the workspace.
    """
    # The demo always works on its own generated sample, never on a configured real data folder.
    settings = dataclasses.replace(_settings(), data_dir=_settings().home / "sample")
    first = _parse_date(start)
    console.rule("memberflow demo")
    console.print(f"workspace: {settings.home}")
    _generate(settings, members, first, days, seed, settings.data_dir, 0.02)

    from devkit.orchestrate import prepare_airflow

    began = time.perf_counter()
    prepare_airflow(settings)
    log_path = settings.airflow_home / "demo-runs.log"
    results = _run_days(settings, "extract_channels", [first + timedelta(d) for d in range(days)], log_path)
    elapsed = time.perf_counter() - began
    failed = [r for r in results if not r.ok]
    console.print(
        f"Airflow ran extract_channels for {len(results)} days in {elapsed:.0f} s "
        f"({len(failed)} failed runs); task logs: {log_path}"
    )
    _print_summary(settings)
    if not failed:
        # In production the landed Assets trigger transform_members; the demo runs it once, at the end.
        began = time.perf_counter()
        failed = [
            r
            for r in _run_days(settings, "transform_members", [first + timedelta(days - 1)], log_path)
            if not r.ok
        ]
        console.print(
            f"Airflow ran transform_members (dbt through Cosmos) in {time.perf_counter() - began:.0f} s"
        )
    if not failed and days < 45:
        console.print(
            f"{days} days of sample are too few to train models (45 or more): skipping train and score"
        )
    elif not failed:
        # Weekly training and daily scoring, once each on the last day (scoring follows the marts Asset).
        if days < 90 and settings.models_config is None:
            from ml.config import SHORT_HISTORY

            os.environ["MEMBERFLOW_MODELS_CONFIG"] = str(SHORT_HISTORY)
            console.print(f"{days} days of sample: models use 14-day horizons ({SHORT_HISTORY.name})")
        began = time.perf_counter()
        last = [first + timedelta(days - 1)]
        failed = [
            r
            for dag_id in ("train_models", "score_members")
            for r in _run_days(settings, dag_id, last, log_path)
        ]
        failed = [r for r in failed if not r.ok]
        console.print(f"Airflow ran train_models and score_members in {time.perf_counter() - began:.0f} s")
    delivered = None
    if not failed and days >= 45:
        delivered, failed = _demo_delivery(settings, last, log_path)
    for r in failed:
        err.print(f"[red]{r.dag_id} {r.day}: failed tasks {', '.join(r.failed_tasks)}[/red]")
    if not failed:
        _print_warehouse(settings)
        _print_identity(settings)
        _print_quality(settings)
        if days >= 45:
            _print_models(settings)
        if delivered:
            _print_delivery(delivered)
            _print_ops_access(settings, port, serve_after)
    if serve_after and not failed and delivered:
        _serve(settings, "127.0.0.1", port)
    raise typer.Exit(1 if failed else 0)


def _print_ops_access(settings: Settings, port: int, serving: bool) -> None:
    """A token to try the ops page with, and how to open it."""
    from memberflow.api.access import AccessStore

    issued = AccessStore.open(settings).create("demo", "ops", days=7)
    console.rule("ops page")
    if not serving:
        console.print("start it with:  memberflow serve   (or run the demo with --serve)")
    console.print(f"open:           http://127.0.0.1:{port}/")
    console.print(f"sign in with:   {issued.token}   (role ops, 7 days; `memberflow tokens` makes more)")


def _demo_delivery(settings: Settings, last: list[date], log_path: Path):
    """Run deliver_segments against the local sandbox APIs (webhook, WeCom, SMS) and return its report."""
    import json

    from devkit.sandbox import SandboxServer
    from memberflow.outreach.run import DeliveryReport
    from memberflow.warehouse import require_published

    # The sample's dates are in the past: replay the delivery on the scored day's morning (China time), or
    # every segment would be too old to send (and SMS would depend on the hour the demo runs).
    scored = require_published(settings, "scores")["date"]
    os.environ.setdefault("MEMBERFLOW_CLOCK", f"{scored}T10:00:00+08:00")
    began = time.perf_counter()
    with SandboxServer() as sandbox:
        os.environ.update(sandbox.env())
        failed = [r for r in _run_days(settings, "deliver_segments", last, log_path) if not r.ok]
        received = sandbox.state.snapshot()
    console.print(
        f"Airflow ran deliver_segments in {time.perf_counter() - began:.0f} s; the local sandbox APIs "
        f"applied {len(received['received']):,} messages from {sum(received['requests'].values()):,} requests"
    )
    reports = sorted((settings.reports_dir / "delivery").glob("*/*.json"), key=lambda p: p.stat().st_mtime)
    if failed or not reports:
        return None, failed
    return DeliveryReport(**json.loads(reports[-1].read_text())), failed


def _print_models(settings: Settings) -> None:
    """Champion metrics per model and what was scored."""
    from memberflow.core.vocab import MODELS
    from memberflow.warehouse import read_warehouse
    from ml.registry import CHALLENGER, CHAMPION, alias_version, connect, registered_name

    client = connect(settings)
    notes: list[str] = []
    with read_warehouse(settings) as con:
        scored = dict(
            con.sql(
                "select model, count(*) from member_scores "
                "where as_of = (select max(as_of) from member_scores) group by 1"
            ).fetchall()
        )
    table = Table(title="models (held-out test half) and today's scores")
    for column in ("model", "champion", "AUC", "recency AUC", "Brier", "ECE", "scored members"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in MODELS:
        ref = alias_version(settings, name, CHAMPION)
        if ref is None:
            table.add_row(name, "none", "", "", "", "", "0")
            challenger = alias_version(settings, name, CHALLENGER)
            if challenger is not None:
                reason = client.get_model_version(registered_name(name), challenger.version).tags.get(
                    "reason"
                )
                notes.append(f"{name} v{challenger.version} {reason}")
            continue
        m = client.get_run(ref.run_id).data.metrics
        table.add_row(
            name,
            f"v{ref.version}",
            f"{m['model.auc']:.3f}",
            f"{m['recency.auc']:.3f}",
            f"{m['model.brier']:.4f}",
            f"{m['model.ece']:.3f}",
            f"{scored.get(name, 0):,}",
        )
    console.print(table)
    for note in notes:
        console.print(escape(note), soft_wrap=True)
    console.print(
        f"MLflow store: {settings.mlflow_uri}   (memberflow models status; mlflow ui --backend-store-uri …)"
    )


def _run_days(settings: Settings, dag_id: str, days: list[date], log_path: Path):
    """Run the DAG once per day; Airflow's own output goes to the log file, a progress bar to the terminal."""
    from rich.progress import Progress

    from devkit.orchestrate import run_dag

    results = []
    with (
        open(log_path, "a") as log,
        _terminal() as terminal,
        Progress(console=terminal, transient=True) as progress,
    ):
        task = progress.add_task(f"Airflow: {dag_id}", total=len(days))
        for day in days:
            with _redirect_output(log):
                results.append(run_dag(dag_id, day))
            progress.advance(task)
    return results


@contextlib.contextmanager
def _terminal():
    """A console on the real terminal, usable while file descriptors 1 and 2 point at a log file."""
    handle = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    try:
        yield Console(file=handle)
    finally:
        handle.close()


@contextlib.contextmanager
def _redirect_output(log):
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def _print_quality(settings: Settings) -> None:
    """One line per gate: how many validations passed, warned or failed, and where the Data Docs are."""
    from collections import Counter

    from expectations.runner import docs_index, load_results
    from memberflow.extract import partition_days

    for gate in ("landing", "marts", "scores", "segments"):
        root = settings.quality_dir / "results" / gate
        statuses = Counter(
            r.status for day in partition_days(root) for r in load_results(settings, gate, day)
        )
        shown = ", ".join(f"{statuses[s]:,} {s}" for s in ("passed", "warning", "failed") if statuses[s])
        console.print(f"{gate} quality gate: {shown or 'no results'} ({root})")
    console.print(f"Data Docs: {docs_index(settings)}   (details: memberflow quality report)")


def _print_summary(settings: Settings) -> None:
    from memberflow.summary import workspace_summary

    summary = workspace_summary(settings)
    table = Table(title="what was built")
    for column in ("table", "days", "landed", "quarantined", "top reasons"):
        table.add_column(column, justify="left" if column in ("table", "top reasons") else "right")
    for row in summary.tables:
        table.add_row(row.name, str(row.days), f"{row.landed:,}", f"{row.quarantined:,}", row.top_reasons)
    console.print(table)
    console.print(f"landed Parquet:  {settings.landing_dir}")
    console.print(f"quarantine:      {settings.quarantine_dir}")
    console.print(f"run reports:     {settings.reports_dir / 'extract'}")
    console.print(f"contact vault:   {settings.vault_dir} (phones encrypted; key in {settings.secrets_dir})")


ModelName = Annotated[str, typer.Option("--model", help="Which model: repurchase, churn or conversion.")]


def _model_name(value: str) -> str:
    from memberflow.core.vocab import MODELS

    if value not in MODELS:
        raise typer.BadParameter(f"{value!r} is not a model; choose one of {', '.join(MODELS)}")
    return value


def _cutoff_list(value: str | None) -> list[date] | None:
    if not value:
        return None
    return [_parse_date(v.strip()) for v in value.split(",") if v.strip()]


def _ml_errors(action):
    """Run an ml action; unusable inputs (no warehouse, failed gate, bad cutoffs, no champion) exit 1,
    an unusable models config exits 2."""
    from memberflow.warehouse import NotPublishedError
    from ml.datasets import DatasetError
    from ml.registry import NoChampionError

    try:
        return action()
    except (NotPublishedError, DatasetError, NoChampionError, FileNotFoundError) as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None


def _metrics_table(title: str, metrics: dict[str, dict[str, float]]) -> Table:
    from ml.train import METRIC_COLUMNS

    table = Table(title=title)
    table.add_column("scorer")
    for column in (*METRIC_COLUMNS, "rows"):
        table.add_column(column, justify="right")
    for name, values in metrics.items():
        table.add_row(name, *(f"{values[c]:.4f}" for c in METRIC_COLUMNS), f"{values['rows']:,.0f}")
    return table


@app.command()
def train(
    model: ModelName,
    cutoffs: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated cutoff dates; the newest is held out. Default: weekly, from the data."
        ),
    ] = None,
    horizon_days: Annotated[
        int | None,
        typer.Option(min=1, help="Label horizon in days (default: the model's, see ml/models.yml)."),
    ] = None,
) -> None:
    """Train a model on the built warehouse, register it as challenger and promote it if it earns it.

    Promotion needs the new model to beat the recency baseline (and BG/NBD for repurchase) and the current
    champion on the held-out cutoff by the margins in ml/models.yml. Exit 1 when inputs are unusable.
    """
    settings = _settings()
    name = _model_name(model)
    from ml.train import train as train_model

    result = _ml_errors(lambda: train_model(settings, name, _cutoff_list(cutoffs), horizon_days))
    ev = result.evaluation
    manifest = ev.training_set.manifest
    console.print(
        f"{name}: trained on {len(ev.training_set.train):,} rows from cutoffs "
        f"{', '.join(manifest['cutoffs'][:-1])}; held out {manifest['holdout_cutoff']} "
        f"(horizon {manifest['horizon_days']} days), {ev.fitted.best_iteration} trees"
    )
    console.print(_metrics_table(f"{name} on the held-out cutoff (test half)", ev.metrics))
    console.print(
        f"registered version {result.version} as challenger; {escape(result.decision.reason)}", soft_wrap=True
    )
    console.print(f"MLflow run {result.run_id} in {settings.mlflow_uri}")


@app.command()
def score(
    model: ModelName,
    as_of: Annotated[str, typer.Option(help="Score date YYYY-MM-DD: features use data strictly before it.")],
    out: Annotated[Path | None, typer.Option(help="Also write the scores to this Parquet file.")] = None,
    reasons: Annotated[
        bool,
        typer.Option(
            "--reasons",
            help="Explain every scored member now (a TreeSHAP pass: tens of times the scoring). By "
            "default reasons are computed for segment members when segments are built.",
        ),
    ] = False,
) -> None:
    """Score the model's population with the champion into member_scores (and --out)."""
    settings = _settings()
    name = _model_name(model)
    from ml.score import score as score_members

    result = _ml_errors(lambda: score_members(settings, name, _parse_date(as_of), out, reasons))
    console.print(
        f"{name}: scored {result.rows:,} members as of {result.as_of} with champion v{result.version} "
        f"(mean probability {result.mean_probability:.3f}"
        + (f", {result.explained:,} explained" if reasons else "")
        + ") into member_scores"
        + (f" and {result.out}" if result.out else "")
    )


@app.command()
def backtest(
    model: ModelName,
    cutoffs: Annotated[str, typer.Option(help="Comma-separated training cutoff dates.")],
    test_cutoff: Annotated[str, typer.Option(help="The cutoff to evaluate at, YYYY-MM-DD.")],
    horizon_days: Annotated[int | None, typer.Option(min=1, help="Label horizon in days.")] = None,
) -> None:
    """Train at the cutoffs and evaluate at the test cutoff beside the baselines; write a report."""
    settings = _settings()
    name = _model_name(model)
    from ml.train import backtest as run_backtest

    train_cutoffs = _cutoff_list(cutoffs) or []
    result = _ml_errors(
        lambda: run_backtest(settings, name, train_cutoffs, _parse_date(test_cutoff), horizon_days)
    )
    console.print(_metrics_table(f"{name} backtest at {test_cutoff}", result.evaluation.metrics))
    console.print(f"report: {result.report_dir / 'report.md'}  (MLflow run {result.run_id})")


models_app = typer.Typer(help="Registered models: versions, aliases, rollback.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("status")
def models_status() -> None:
    """Each model's versions with their decision, and which holds champion and challenger."""
    settings = _settings()
    from memberflow.core.vocab import MODELS
    from ml.registry import CHALLENGER, CHAMPION, alias_version, connect, registered_name

    client = connect(settings)
    table = Table(title=f"models in {settings.mlflow_uri}")
    for column in ("model", "version", "alias", "test AUC", "test Brier", "decision"):
        table.add_column(column)
    for name in MODELS:
        aliases = {a: alias_version(settings, name, a) for a in (CHAMPION, CHALLENGER)}
        versions = client.search_model_versions(f"name = '{registered_name(name)}'")
        for mv in sorted(versions, key=lambda v: int(v.version), reverse=True):
            held = [a for a, ref in aliases.items() if ref is not None and ref.version == str(mv.version)]
            run = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
            table.add_row(
                name,
                str(mv.version),
                ", ".join(held),
                f"{run.get('model.auc', float('nan')):.4f}",
                f"{run.get('model.brier', float('nan')):.4f}",
                escape(mv.tags.get("reason", ""))[:90],
            )
    console.print(table)


@models_app.command("rollback")
def models_rollback(
    model: ModelName,
    to_version: Annotated[
        str | None,
        typer.Option(help="Version to make champion (default: the champion the current one replaced)."),
    ] = None,
) -> None:
    """Move the champion alias back (to a given version, or to the previous champion)."""
    settings = _settings()
    name = _model_name(model)
    from ml.registry import rollback

    ref = _ml_errors(lambda: rollback(settings, name, to_version))
    console.print(f"{name}: champion is now version {ref.version}")


# --- segments and delivery ----------------------------------------------------------------------------------


def _outreach_errors(action):
    """Run a segments/delivery action; unusable inputs exit 1, a bad segments or outreach config exits 2."""
    from memberflow.segments import ProfilesError

    try:
        return action()
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except (ProfilesError, FileNotFoundError) as exc:
        err.print(f"[red]cannot plan segments:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None


def _delivery_date(settings: Settings, as_of: str | None) -> date:
    if as_of:
        return _parse_date(as_of)
    from memberflow.warehouse import NotPublishedError, require_published

    try:
        return date.fromisoformat(require_published(settings, "scores")["date"])
    except NotPublishedError:
        err.print(
            "[red]no published scores:[/red] pass --as-of or run `memberflow score` and its quality gate"
        )
        raise typer.Exit(1) from None


def _segments_table(title: str, summary: dict) -> Table:
    table = Table(title=title)
    for column in (
        "segment",
        "channel",
        "matched",
        "assigned",
        "send",
        "holdout",
        "already sent",
        "suppressed",
    ):
        table.add_column(
            column, justify="left" if column in ("segment", "channel", "suppressed") else "right"
        )
    for name, s in summary.items():
        table.add_row(
            name,
            s["channel"],
            f"{s['matched']:,}",
            f"{s['assigned']:,}",
            f"{s['send']:,}",
            f"{s['holdout']:,}",
            f"{s['already_sent']:,}",
            ", ".join(f"{r} {n:,}" for r, n in sorted(s["suppressed"].items())) or "-",
        )
    return table


segments_app = typer.Typer(
    help="Segments: rules over tags and scores, and who is in them.", no_args_is_help=True
)
app.add_typer(segments_app, name="segments")


@segments_app.command("preview")
def segments_preview(
    as_of: Annotated[
        str | None, typer.Option(help="Delivery date YYYY-MM-DD (default: the scored date).")
    ] = None,
    samples: Annotated[int, typer.Option(min=0, help="Sample members shown per segment (masked).")] = 3,
) -> None:
    """Dry run of the day's segments: sizes, suppressed by reason, a few masked members. Sends nothing."""
    settings = _settings()
    day = _delivery_date(settings, as_of)
    import polars as pl

    from memberflow.outreach.run import member_reasons, plan

    planned = _outreach_errors(lambda: plan(settings, day))
    console.print(_segments_table(f"segments on {day} ({planned.members:,} members)", planned.summary()))
    if samples:
        table = Table(title="sample members (masked)")
        for column in ("segment", "member", "phone", "status", "why"):
            table.add_column(column)
        for seg in planned.segments:
            rows = planned.frame.filter(pl.col("segment") == seg.name).sort("tie").head(samples)
            for r in rows.iter_rows(named=True):
                why = "; ".join(member_reasons(r, seg)[:2])
                table.add_row(
                    seg.name,
                    r["member_id"],
                    r.get("phone_masked") or "-",
                    r["status"] + (f" ({r['reason']})" if r["reason"] else ""),
                    escape(why),
                )
        console.print(table)


def _print_delivery(report) -> None:
    if report.dry_run:
        verb, count = "would send", sum(s["send"] for s in report.segments.values())
    else:
        verb, count = "sent", report.sent
    by_channel = ", ".join(f"{c} {n:,}" for c, n in sorted(report.sent_by_channel.items())) or "none"
    console.print(
        _segments_table(f"segments on {report.as_of} ({report.members:,} members)", report.segments)
    )
    console.print(
        f"run {report.run_id}: {verb} {count:,} ({by_channel}); "
        f"retried from earlier runs {report.retried:,}; "
        f"requests retried {report.retried_requests:,}; "
        f"holdout {report.holdout:,}; "
        f"already sent {report.already_sent:,}"
    )
    if report.suppressed:
        console.print("suppressed: " + ", ".join(f"{r} {n:,}" for r, n in report.suppressed.items()))
    if report.failed:
        err.print(
            "[yellow]failed (retried on the next run):[/yellow] "
            + escape("; ".join(f"{e} ({n:,})" for e, n in report.failed.items()))
        )
    console.print(f"report: {report.report_path}")


@app.command()
def deliver(
    as_of: Annotated[
        str | None, typer.Option(help="Delivery date YYYY-MM-DD (default: the scored date).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Plan and report only; send nothing.")] = False,
) -> None:
    """Build the day's segments, suppress, and send what is new through the connectors (ledger + report).

    The plan passes the segments quality gate before anything is sent. Endpoints come from the environment
    (MEMBERFLOW_WEBHOOK_URL, MEMBERFLOW_WECOM_URL, MEMBERFLOW_SMS_URL and their secrets); a channel
    without one fails its rows, which are retried on the next run.
    """
    settings = _settings()
    day = _delivery_date(settings, as_of)
    from memberflow.outreach.run import deliver as run_delivery
    from memberflow.outreach.run import plan, write_memberships

    if not dry_run:
        from expectations.marts import gate_warehouse
        from expectations.runner import QualityGateError

        _outreach_errors(lambda: write_memberships(settings, plan(settings, day)))
        try:
            gate_warehouse(settings, day, gate="segments")
        except QualityGateError as exc:
            err.print(f"[red]segments quality gate failed; nothing sent:[/red] {escape(str(exc))}")
            raise typer.Exit(1) from None
    report = _outreach_errors(lambda: run_delivery(settings, day, dry_run=dry_run))
    _print_delivery(report)
    raise typer.Exit(1 if report.failed else 0)


@app.command()
def sandbox(
    port: Annotated[int, typer.Option(help="Local port.")] = 8791,
    failure_rate: Annotated[
        float, typer.Option(min=0, max=1, help="Share of requests answered with a fault.")
    ] = 0.0,
    limit_per_minute: Annotated[int | None, typer.Option(help="Requests per minute per API.")] = None,
) -> None:
    """Serve local stand-ins of the webhook, WeCom and SMS APIs (for trying deliveries by hand)."""
    from devkit.sandbox import SandboxConfig, SandboxServer

    limits = {"webhook": limit_per_minute, "wecom": limit_per_minute, "sms": limit_per_minute}
    server = SandboxServer(SandboxConfig(limits=limits, failure_rate=failure_rate), port=port).start()
    console.print(f"outreach sandbox on {server.url}; point memberflow at it with:")
    for key, value in server.env().items():
        console.print(f"  export {key}={value}")
    console.print(f"received so far: {server.url}/_sandbox/received   (Ctrl-C stops)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


def _serve(settings: Settings, host: str, port: int) -> None:
    import logging

    import uvicorn

    from memberflow.api.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # uvicorn's own access log prints every URL with its query string: off. The app logs route templates.
    uvicorn.run(create_app(settings), host=host, port=port, access_log=False, log_config=None)


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Interface to listen on (0.0.0.0 to serve the network).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8700,
) -> None:
    """Serve the ops API (OpenAPI at /openapi.json) and the ops web page at http://HOST:PORT/.

    Every call but /api/health needs a token: create one with `memberflow tokens create`."""
    settings = _settings()
    console.print(f"ops page and API on http://{host}:{port}/   (Ctrl-C stops)")
    _serve(settings, host, port)


tokens_app = typer.Typer(help="API tokens of the ops API: create, list, revoke.", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Option(help="Whose token it is (shown in the audit trail).")],
    role: Annotated[str, typer.Option(help="ops (masked data) or admin (may export unmasked).")] = "ops",
    days: Annotated[int | None, typer.Option(help="Days until it expires; 0 for never.")] = 90,
) -> None:
    """Create a token and print it once; only its hash is stored."""
    from memberflow.api.access import AccessStore

    settings = _settings()
    try:
        issued = AccessStore.open(settings).create(name, role, days or None)
    except ConfigError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    console.print(
        f"token {issued.token_id} for {escape(issued.name)} ({issued.role}), "
        f"expires {issued.expires_at or 'never'}:"
    )
    print(issued.token)


@tokens_app.command("list")
def tokens_list() -> None:
    """Tokens with their role, expiry, revocation and last use (never the token itself)."""
    from memberflow.api.access import AccessStore

    rows = AccessStore.open(_settings()).tokens()
    table = Table("id", "name", "role", "created", "expires", "revoked", "last used")
    keys = ("token_id", "name", "role", "created_at", "expires_at", "revoked_at", "last_used_at")
    for r in rows:
        table.add_row(*(escape(str(r[k] or "")) for k in keys))
    console.print(table)


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[str, typer.Argument(help="The id `tokens list` shows.")]) -> None:
    """Revoke a token at once."""
    from memberflow.api.access import AccessStore

    if not AccessStore.open(_settings()).revoke(token_id):
        err.print(f"[red]no active token {escape(token_id)}[/red]")
        raise typer.Exit(1)
    console.print(f"revoked {escape(token_id)}")


@app.command()
def audit(limit: Annotated[int, typer.Option(min=1, help="Newest rows to show.")] = 50) -> None:
    """The ops API's audit trail: exports (unmasked ones flagged) and member lookups."""
    from memberflow.api.access import AccessStore

    table = Table("at", "who", "role", "action", "segment", "day", "unmasked", "rows", "state")
    for r in AccessStore.open(_settings()).audit_rows(limit):
        rows = "" if r["rows"] is None else str(r["rows"])
        who, segment = escape(r["token_name"]), escape(r["segment"] or "")
        unmasked = "yes" if r["unmasked"] else ""
        table.add_row(
            r["at"], who, r["role"], r["action"], segment, r["as_of"] or "", unmasked, rows, r["state"]
        )
    console.print(table)


@app.command()
def where() -> None:
    """Print where the workspace keeps each thing."""
    settings = _settings()
    from devkit.orchestrate import DAGS_FOLDER

    for label, path in (
        ("workspace (MEMBERFLOW_HOME)", settings.home),
        ("channel data (MEMBERFLOW_DATA_DIR)", settings.data_dir),
        ("landed Parquet", settings.landing_dir),
        ("quarantine", settings.quarantine_dir),
        ("contact vault", settings.vault_dir),
        ("run reports", settings.reports_dir),
        ("partitions awaiting the landing gate", settings.audit_dir),
        ("quality results and Data Docs", settings.quality_dir),
        ("warehouse (DuckDB)", settings.warehouse_path),
        ("dbt target, logs, manifest", settings.home / "dbt"),
        ("identity snapshot", settings.home / "identity"),
        ("MLflow store", settings.mlflow_uri),
        ("backtest reports", settings.reports_dir / "backtest"),
        ("delivery ledger (SQLite)", settings.home / "outreach" / "ledger.sqlite"),
        ("delivery reports", settings.reports_dir / "delivery"),
        ("segment exports for ops", settings.home / "exports" / "segments"),
        ("API tokens and audit trail (SQLite)", settings.home / "api" / "access.sqlite"),
        ("Airflow home", settings.airflow_home),
        ("DAGs", DAGS_FOLDER),
    ):
        console.print(f"{label:<36} {path}")


if __name__ == "__main__":  # pragma: no cover
    app()
