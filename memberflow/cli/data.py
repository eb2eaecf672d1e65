"""Data commands: generate sample data, land channel exports, build the warehouse, identity and quality
reports, and where the workspace keeps things."""

from __future__ import annotations

import os
import time
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from memberflow.cli.base import BUSY, _parse_date, _settings, app, console, err
from memberflow.core.settings import ConfigError, Settings


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
    """Write sample data for all fourteen landing tables, plus the ground truth under _truth/."""
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
    2 when a partition is missing, 75 while another run is landing in the workspace.
    """
    from memberflow.core.contracts import CONTRACTS, get_contract
    from memberflow.pipeline import land_days

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
    """Run ``action`` (a landing or a build). An unusable MEMBERFLOW_QUALITY_CONFIG is a configuration error
    and a missing or wrong data folder a usage error (exit 2); another run landing in the workspace exits
    BUSY having done nothing."""
    from memberflow.extract import DataDirError
    from memberflow.warehouse import WorkspaceBusy

    try:
        return action()
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from None
    except (DataDirError, WorkspaceBusy) as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(BUSY if isinstance(exc, WorkspaceBusy) else 2) from None


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
    spark = "spark"


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
            help="dbt target: duckdb (the warehouse file), postgres (MEMBERFLOW_PG_* settings) or spark "
            "(MEMBERFLOW_SPARK_* settings); default MEMBERFLOW_DBT_TARGET, else duckdb.",
        ),
    ] = None,
    full_refresh: Annotated[
        bool,
        typer.Option(
            "--full-refresh",
            help="Rebuild the incremental models from scratch, e.g. to count every decision's outcomes "
            "again after the attribution rule changed.",
        ),
    ] = False,
) -> None:
    """Land every source partition not published yet, or whose files changed since (a file added late),
    each through the landing quality gate; build the warehouse with dbt (models and tests), then run the
    marts quality gate.

    Exits 1 when a partition quarantines too much or fails its quality gate (nothing is built), when a dbt
    model or test fails, or when a critical marts check fails (the marts are then not published, and
    training, scoring and delivery refuse to use them). Exits 2 when the data folder is missing or holds
    none of the channels' table folders.

    With the postgres target the landing zone is loaded into the database and the dbt project (with all
    its tests) is built there; with the spark target it is built on Spark, which reads the landed Parquet
    in place. Either way the build ends by copying the marts into the workspace's DuckDB file (the serving
    store), which the marts gate, training, segments, delivery and the ops API read (docs/scaling.md).
    """
    if target:
        os.environ["MEMBERFLOW_DBT_TARGET"] = target.value
    from expectations.runner import QualityGateError
    from memberflow.core.settings import PgSettings, PgSettingsError, postgres_target, spark_target
    from memberflow.pipeline import NothingLandedError, land_pending
    from memberflow.pipeline import build as build_and_gate
    from memberflow.transform import DbtError

    if postgres_target():
        try:
            PgSettings.from_env()
        except PgSettingsError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
    if spark_target():
        from memberflow.spark import SparkSettings, SparkSettingsError, check_java

        try:
            SparkSettings.from_env()
            check_java()
        except SparkSettingsError as exc:
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
        dates = [_parse_date(d) for d in feature_date or []]
        outcome = _with_quality_config(lambda: build_and_gate(settings, cutoff, dates, full_refresh))
    except (DbtError, NothingLandedError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    except QualityGateError as exc:
        err.print(
            f"[red]marts quality gate failed; the marts are not published:\n{escape(str(exc))}[/red]",
            soft_wrap=True,
        )
        raise typer.Exit(1) from None
    console.print(
        f"dbt build: {outcome.dbt.succeeded} models and tests passed; with the marts gate "
        f"{time.perf_counter() - began:.1f} s"
    )
    for message in outcome.gate.messages("warning"):
        err.print(f"[yellow]warning: {escape(message)}[/yellow]", soft_wrap=True)
    console.print(
        f"marts quality gate {outcome.gate.status} for {outcome.gate.date}; "
        f"Data Docs: {outcome.gate.docs_path}"
    )
    _print_warehouse(settings)


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
    from memberflow.core.settings import get_settings
    from memberflow.summary import warehouse_counts

    target = get_settings().dbt_target
    title = f"warehouse {settings.warehouse_path}"
    if target != "duckdb":
        title = f"serving store {settings.warehouse_path} (the marts built on {target}, copied here)"
    table = Table(title=title)
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


@app.command()
def freshness() -> None:
    """How old each landed channel table is: dbt source freshness on the time its newest rows were loaded.

    A table that lands every day is 24-48 hours old; it warns after a missed day and is an error after
    three. Exits 1 when any table is an error, 0 otherwise.
    """
    from memberflow.transform import DbtError, source_freshness

    settings = _settings()
    try:
        found = source_freshness(settings)
    except DbtError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(1) from None
    table = Table(title=f"landed tables, as of now ({settings.landing_dir})")
    for column in ("table", "status", "newest load (UTC)", "hours old"):
        table.add_column(column, justify="right" if column == "hours old" else "left")
    colours = {"pass": "green", "warn": "yellow"}
    for f in found:
        colour = colours.get(f.status, "red")
        age = "" if f.age_hours is None else f"{f.age_hours:,.1f}"
        table.add_row(f.table, f"[{colour}]{f.status}[/{colour}]", f.newest_load or "never", age)
    console.print(table)
    stale = [f.table for f in found if f.status not in ("pass", "warn")]
    if stale:
        err.print(f"[red]stale or unreadable: {', '.join(stale)}[/red]")
        raise typer.Exit(1)


@app.command()
def where() -> None:
    """Print where the workspace keeps each thing."""
    settings = _settings()
    from memberflow.core.settings import DAGS_FOLDER

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
        ("keys not given in the environment", settings.secrets_dir),
    ):
        console.print(f"{label:<36} {path}")


keys_app = typer.Typer(
    help="The id key (phone tokens) and the vault key (encrypted phones): make and rotate them.",
    no_args_is_help=True,
)

app.add_typer(keys_app, name="keys")


@keys_app.command("new")
def keys_new(
    kind: Annotated[str, typer.Argument(help="id or vault.")],
) -> None:
    """Print a new random key, for a deployment that passes its keys in the environment."""
    from memberflow.core.settings import new_key_text

    if kind not in ("id", "vault"):
        raise typer.BadParameter(f"{kind!r}: choose id or vault")
    print(new_key_text(f"{kind}_key"))


@keys_app.command("rotate")
def keys_rotate(
    id_key: Annotated[
        bool, typer.Option("--id-key", help="Rotate the id key: re-tokenize every phone.")
    ] = False,
    vault_key: Annotated[
        bool, typer.Option("--vault-key", help="Rotate the vault key: re-seal the vault.")
    ] = False,
) -> None:
    """Replace the id key and/or the vault key, re-tokenizing and re-sealing from the contact vault.

    A key kept in the secrets folder is replaced by a new random one. A key passed in the environment needs
    its successor in MEMBERFLOW_NEW_ID_KEY / MEMBERFLOW_NEW_VAULT_KEY (`memberflow keys new id`); set
    MEMBERFLOW_ID_KEY / MEMBERFLOW_VAULT_KEY to it afterwards, since the workspace then refuses the old one.
    Member ids stay as they are. The warehouse is rebuilt by the next `memberflow build`. Exits 2 on a key
    setting that cannot be used, 75 while another run lands in the workspace; safe to run again if stopped.
    """
    from memberflow.keys import rotate_keys
    from memberflow.warehouse import WorkspaceBusy

    names = [name for name, chosen in (("id_key", id_key), ("vault_key", vault_key)) if chosen]
    if not names:
        raise typer.BadParameter("say which key: --id-key, --vault-key or both")
    settings = _settings()
    try:
        report = rotate_keys(settings, names)
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except WorkspaceBusy as exc:
        err.print(f"[yellow]{escape(str(exc))}[/yellow]")
        raise typer.Exit(BUSY) from None
    console.print(f"rotated {' and '.join(report.rotated)}; {report.phones:,} phones in the vault")
    if "id_key" in report.rotated:
        console.print(
            f"re-tokenized {report.values_replaced:,} values in {report.files_rewritten:,} files and "
            f"{report.ledger_rows:,} delivery-ledger rows; member ids are kept"
        )
        if report.unexplained_tokens:
            err.print(
                f"[yellow]{report.unexplained_tokens:,} landed tokens have no phone in the vault (made by "
                "a partner with the old key): left as they were; the partner must send tokens made with the "
                "new key from now on[/yellow]"
            )
    if "vault_key" in report.rotated:
        console.print(f"re-sealed {report.vault_entries_resealed:,} vault entries")
    for variable in report.set_variables:
        err.print(f"[yellow]now set {variable} to the new key: the workspace refuses the old one[/yellow]")
    console.print(
        "next: `memberflow build` (or the transform DAG) rebuilds the warehouse with the new tokens"
    )
