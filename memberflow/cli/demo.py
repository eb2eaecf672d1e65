"""The demo: sample data through every pipeline in Airflow, then a summary and the ops page link."""

from __future__ import annotations

import dataclasses
import os
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated

import typer

from memberflow.cli.base import _parse_date, _redirect_output, _settings, _terminal, app, console, err
from memberflow.cli.data import _generate, _print_identity, _print_quality, _print_summary, _print_warehouse
from memberflow.cli.models import _print_models
from memberflow.cli.ops import _print_ops_access, _serve
from memberflow.cli.outreach import _print_delivery, _print_outcomes
from memberflow.core.settings import Settings


@app.command()
def demo(
    members: Annotated[int, typer.Option(min=1, help="People in the sample.")] = 2000,
    days: Annotated[
        int, typer.Option(min=1, max=400, help="Days of sample data, landed by one Airflow run.")
    ] = 60,
    start: Annotated[str, typer.Option(help="First day of the sample, YYYY-MM-DD.")] = "2026-01-01",
    seed: Annotated[int, typer.Option(help="Random seed of the sample.")] = 7,
    serve_after: Annotated[
        bool, typer.Option("--serve", help="Keep serving the ops page and API afterwards (Ctrl-C stops).")
    ] = False,
    port: Annotated[int, typer.Option(help="Port of the ops page with --serve.")] = 8700,
) -> None:
    """Generate sample data and run every pipeline through Airflow, then summarize.

    The history is landed by one extract_channels run covering every day of the sample (its ``days``
    parameter); transform, train, score and deliver then run once, on the last day. The sample's world then
    reacts to the sends (devkit.world), the days after the delivery land until every outcome window has
    closed, and the uplift report compares the members sent with the holdout.

    Uses the embedded defaults: workspace under MEMBERFLOW_HOME, Airflow on SQLite in the workspace.
    """
    # The demo always works on its own generated sample, never on a configured real data folder, and keeps
    # its made-up keys inside its workspace unless told where (a deployment keeps them outside).
    settings = dataclasses.replace(_settings(), data_dir=_settings().home / "sample")
    if settings.secrets_dir_env is None and (
        not settings.holds_data() or (settings.home / "secrets").is_dir()
    ):
        settings.keep_keys_inside()  # a new demo workspace, or one made before keys moved out
    first = _parse_date(start)
    console.rule("memberflow demo")
    console.print(f"workspace: {settings.home}")
    if settings.secrets_dir.is_relative_to(settings.home):
        console.print(
            f"keys:      {settings.secrets_dir} (made-up keys, kept inside the demo workspace; a deployment "
            "keeps its keys outside: docs/operations.md, Keys)"
        )
    # with a delivery (45 days or more), the sample goes on for the longest outcome window after it
    after = outcome_wait() if days >= 45 else 0
    _generate(settings, members, first, days + after, seed, settings.data_dir, 0.02)

    from devkit.orchestrate import prepare_airflow

    began = time.perf_counter()
    with console.status("preparing Airflow's metadata database (once per workspace)"):
        prepare_airflow(settings)
    log_path = settings.airflow_home / "demo-runs.log"
    last = [first + timedelta(days - 1)]
    results = _run_days(settings, "extract_channels", last, log_path, conf={"days": days})
    elapsed = time.perf_counter() - began
    failed = [r for r in results if not r.ok]
    console.print(
        f"Airflow ran extract_channels once for {days} days in {elapsed:.0f} s "
        f"({'failed' if failed else 'succeeded'}); task logs: {log_path}"
    )
    _print_summary(settings)
    if not failed:
        # In production the landed Assets trigger transform_members; the demo runs it once, at the end.
        began = time.perf_counter()
        failed = [r for r in _run_days(settings, "transform_members", last, log_path) if not r.ok]
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
        failed = [
            r
            for dag_id in ("train_models", "score_members")
            for r in _run_days(settings, dag_id, last, log_path)
        ]
        failed = [r for r in failed if not r.ok]
        console.print(f"Airflow ran train_models and score_members in {time.perf_counter() - began:.0f} s")
    delivered = outcomes = None
    if not failed and days >= 45:
        delivered, failed = _demo_delivery(settings, last, log_path)
    if not failed and delivered:
        outcomes, failed = _demo_outcomes(settings, last[0], after, log_path)
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
            _print_outcomes(outcomes, last[0] + timedelta(days=after))
            _print_ops_access(settings, port, serve_after)
    if serve_after and not failed and delivered:
        _serve(settings, "127.0.0.1", port)
    raise typer.Exit(1 if failed else 0)


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


def outcome_wait() -> int:
    """Days after a delivery until every outcome window of the segment library has closed."""
    from memberflow.segments import load_segments

    return max(s.outcome_days for s in load_segments())


def _demo_outcomes(settings: Settings, delivered_on: date, after: int, log_path: Path):
    """The sample's world reacts to what was sent; Airflow lands the days after the delivery (and the
    delivery day again: a coupon can be redeemed the day it arrives) and builds; the uplift report."""
    from devkit.world import World
    from memberflow.outreach.outcomes import outcomes_report

    began = time.perf_counter()
    reacted = World(settings.data_dir).react(settings)
    end = [delivered_on + timedelta(days=after)]
    failed = [
        r
        for r in _run_days(settings, "extract_channels", end, log_path, conf={"days": after + 1})
        + _run_days(settings, "transform_members", end, log_path)
        if not r.ok
    ]
    console.print(
        f"the sample's world reacted to the sends ({reacted.orders} orders, {reacted.checkins} check-ins, "
        f"{reacted.opt_outs} opt-outs); Airflow landed and built the {after} days after the delivery in "
        f"{time.perf_counter() - began:.0f} s"
    )
    return (None if failed else outcomes_report(settings, end[0])), failed


def _run_days(settings: Settings, dag_id: str, days: list[date], log_path: Path, conf: dict | None = None):
    """Run the DAG once per day (with the run parameters ``conf``). Airflow's own output goes to the log
    file; the terminal shows which task is running, how many of its tasks have started and the time taken
    so far."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from devkit.orchestrate import run_dag, task_count

    results = []
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with open(log_path, "a") as log:
        with _redirect_output(log):  # parsing the DAG logs too
            tasks = task_count(dag_id)
        # stdout stays where _redirect_output points it: Airflow's loggers keep the stream they first see
        with (
            _terminal() as terminal,
            Progress(
                *columns,
                TimeElapsedColumn(),
                console=terminal,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            ) as progress,
        ):
            bar = progress.add_task(f"Airflow {dag_id}", total=len(days) * tasks)
            for day in days:
                label = f"Airflow {dag_id} {day}" if len(days) > 1 else f"Airflow {dag_id}"
                progress.update(bar, description=f"{label}: starting")

                def started(task_id: str, label: str = label) -> None:
                    progress.update(bar, advance=1, description=f"{label}: {task_id}")

                with _redirect_output(log):
                    results.append(run_dag(dag_id, day, on_task=started, conf=conf))
                progress.update(bar, completed=len(results) * tasks)
    return results
