"""Outreach commands: preview segments, deliver them, and serve the sandbox receivers."""

from __future__ import annotations

import time
from datetime import date
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from memberflow.cli.base import BUSY, _parse_date, _settings, app, console, err
from memberflow.core.settings import ConfigError, Settings


def _outreach_errors(action):
    """Run a segments/delivery action; unusable inputs exit 1, a bad segments or outreach config exits 2."""
    from memberflow.outreach.run import ConsentNotCurrentError
    from memberflow.segments import ProfilesError
    from memberflow.warehouse import NotPublishedError

    try:
        return action()
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    except ConsentNotCurrentError as exc:
        err.print(f"[red]consent is not current:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    except NotPublishedError as exc:
        err.print(f"[red]nothing sent:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
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
            f"paused: {escape(s['paused'])}"
            if "paused" in s
            else ", ".join(f"{r} {n:,}" for r, n in sorted(s["suppressed"].items())) or "-",
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

    Consent answers up to the date that are new or changed in the channel folder (the day's own too) are
    landed first; nothing is sent while some cannot be, or while an opt-out landed since the last build
    names an identifier only the next build links to its member. The plan passes the segments quality gate
    before anything is sent. Endpoints come from the environment
    (MEMBERFLOW_WEBHOOK_URL, MEMBERFLOW_WECOM_URL, MEMBERFLOW_SMS_URL and their secrets); a channel
    without one fails its rows, which are retried on the next run.
    """
    settings = _settings()
    day = _delivery_date(settings, as_of)
    from memberflow.outreach.run import deliver as run_delivery
    from memberflow.outreach.run import plan, require_current_consent, write_memberships

    if not dry_run:
        from memberflow.pipeline import land_fresh_consent
        from memberflow.warehouse import WorkspaceBusy

        try:
            landed = _outreach_errors(lambda: land_fresh_consent(settings, day))
        except WorkspaceBusy as exc:
            err.print(f"[yellow]{escape(str(exc))}[/yellow]")
            raise typer.Exit(BUSY) from None
        if landed.reports:
            days = sorted({r.date for r in landed.reports})
            console.print(f"landed consent answers of {', '.join(days)} before planning")
        _outreach_errors(lambda: require_current_consent(settings, day))
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


outcomes_app = typer.Typer(
    help="What happened after the sends: uplift against the holdouts.", no_args_is_help=True
)
app.add_typer(outcomes_app, name="outcomes")


@outcomes_app.command("report")
def outcomes_report(
    as_of: Annotated[
        str | None,
        typer.Option(help="Count outcome windows landed by this date (default: the last landed day)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per segment, channel and week.")
    ] = False,
    mlflow: Annotated[
        bool,
        typer.Option(
            "--mlflow", help="Also record the report as a run of the memberflow-outcomes experiment."
        ),
    ] = False,
) -> None:
    """Per segment, channel and week: treated vs holdout response, uplift with a 95 % interval, incremental
    orders and revenue per 1,000 sends, and a power note (the smallest uplift the arms detect)."""
    import json

    from memberflow.outreach.outcomes import NoOutcomesError, outcomes_report
    from memberflow.transform import latest_landed_day

    settings = _settings()
    day = _parse_date(as_of) if as_of else latest_landed_day(settings)
    if day is None:
        err.print("[red]nothing landed yet:[/red] run `memberflow build` first")
        raise typer.Exit(1)
    try:
        rows = outcomes_report(settings, day)
    except NoOutcomesError as exc:
        err.print(f"[red]no outcomes:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    if mlflow:
        from memberflow.outreach.outcomes import log_to_mlflow

        run_id = log_to_mlflow(settings, day, rows)
        err.print(f"recorded in MLflow: experiment memberflow-outcomes, run {run_id}")
    if as_json:
        print(json.dumps([r.to_dict() for r in rows], ensure_ascii=False, indent=2))
        return
    _print_outcomes(rows, day)


def _print_outcomes(rows: list, day: date) -> None:
    """The uplift report as a table (or why it is empty)."""
    if not rows:
        console.print(
            f"no segment-week has a complete outcome window by {day}: deliveries since then mature "
            "after their segments' outcome_days"
        )
        return
    table = Table(title=f"uplift against the holdout, outcome windows landed by {day}")
    for column in ("segment", "channel", "week", "outcome", "treated", "holdout", "treated %", "holdout %"):
        table.add_column(
            column, justify="left" if column in ("segment", "channel", "week", "outcome") else "right"
        )
    for column in ("uplift (95 % interval)", "orders /1k sends", "CNY /1k sends", "note"):
        table.add_column(column, justify="left" if column == "note" else "right")

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}"

    for r in rows:
        interval = (
            "-"
            if r.uplift is None
            else f"{100 * r.uplift:+.1f} pt ({100 * r.ci_low:+.1f} … {100 * r.ci_high:+.1f})"
        )
        table.add_row(
            r.segment,
            r.channel,
            r.week,
            f"{r.outcome} {r.outcome_days} d",
            f"{r.treated:,}",
            f"{r.holdout:,}",
            pct(r.treated_rate),
            pct(r.holdout_rate),
            interval,
            "-" if r.incremental_orders_per_1000 is None else f"{r.incremental_orders_per_1000:+.0f}",
            "-" if r.incremental_revenue_per_1000 is None else f"{r.incremental_revenue_per_1000:+,.0f}",
            escape(r.note),
        )
    console.print(table)


queue_app = typer.Typer(
    help="Each staff member's daily 1-on-1 queue: who to serve, why, with what words.", no_args_is_help=True
)
app.add_typer(queue_app, name="queue")


@queue_app.command("show")
def queue_show(
    staff: Annotated[str, typer.Option(help="The staff member's WeCom userid (dim_member.staff_owner).")],
    as_of: Annotated[str | None, typer.Option(help="The day (default: the newest day with queues).")] = None,
    lang: Annotated[str, typer.Option(help="Language of the scripts and labels: zh or en.")] = "zh",
    health: Annotated[
        bool,
        typer.Option(help="Show health details (a health product due) of members who consented to it."),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="The queue as JSON, as the API serves it.")] = False,
) -> None:
    """A staff member's queue of the day, best expected value first: member (masked phone), the segment and
    its reasons, what is due, the last touches, the suggested script (话术) and the item's state."""
    import json

    from memberflow.outreach.queue import NoQueue, QueueLog, read_queue
    from memberflow.warehouse import read_warehouse

    if lang not in ("zh", "en"):
        err.print(f"[red]--lang must be zh or en, not {escape(lang)}[/red]")
        raise typer.Exit(2)
    settings = _settings()
    day = _parse_date(as_of) if as_of else None
    try:
        with read_warehouse(settings) as con:
            body = read_queue(con, QueueLog.open(settings), staff, day, lang, health)
    except (NoQueue, FileNotFoundError) as exc:
        err.print(f"[red]no queue:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(body, ensure_ascii=False, indent=2, default=str))
        return
    table = Table(
        title=f"{staff} · {body['as_of']} · {body['total']} members "
        f"({body['open']} open, {body['done']} done, {body['skipped']} skipped)"
    )
    for column in ("#", "member", "phone", "segment", "expected ¥", "why", "due", "script", "state"):
        table.add_column(
            column,
            justify="right" if column in ("#", "expected ¥") else "left",
            overflow="fold",  # Chinese has no spaces to wrap at: fold rather than cut the script
        )
    for item in body["items"]:
        due = item["due"]
        due_text = "" if due is None else f"{due['product'] or '(health data)'} in {due['in_days']} d"
        table.add_row(
            str(item["position"]),
            item["member_id"],
            item["phone_masked"] or "",
            item["segment"],
            f"{item['expected_value']:.1f}" if item["expected_value"] is not None else "",
            escape("; ".join(item["reasons"])),
            escape(due_text),
            escape(item["script"] or ""),
            item["state"] + (f" ({item['skip_reason']})" if item["skip_reason"] else ""),
        )
    console.print(table)
    if not body["items"]:
        console.print("nobody in this queue today: no member of theirs is in a 1-on-1 segment to be sent")


@queue_app.command("read-back")
def queue_read_back(
    as_of: Annotated[
        str | None, typer.Option(help="The last queue day to ask about (default: the published scores').")
    ] = None,
    days: Annotated[int, typer.Option(min=1, max=30, help="How many queue days back to ask about.")] = 3,
) -> None:
    """Ask WeCom what became of the queued members' messages (get_groupmsg_send_result) and record it:
    an item its staff member sent in WeCom becomes done, one WeCom could not send skipped with the reason;
    marks staff made themselves are kept. Items already settled are not asked about again."""
    from memberflow.outreach.connectors import FatalError, RetryableError
    from memberflow.outreach.readback import read_back

    settings = _settings()
    day = _delivery_date(settings, as_of)
    try:
        report = _outreach_errors(lambda: read_back(settings, day, days=days))
    except (FatalError, RetryableError) as exc:
        err.print(f"[red]send results not read:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    results = ", ".join(f"{status} {n:,}" for status, n in sorted(report.results.items())) or "none"
    console.print(
        f"{report.items:,} queue items with a WeCom task ({report.asked:,} not settled before, "
        f"{report.tasks:,} tasks asked); now: {results}; marked {report.marked:,}"
        + (f"; kept {report.kept_staff_marks:,} staff marks" if report.kept_staff_marks else "")
    )
    if report.unmatched:
        err.print(
            f"[yellow]{report.unmatched:,} items are missing from their task's results[/yellow] "
            "(the contact was removed from the task in WeCom?)"
        )


tags_app = typer.Typer(help="Members' tags as WeCom corp tags on their contacts.", no_args_is_help=True)
app.add_typer(tags_app, name="tags")


@tags_app.command("sync")
def tags_sync(
    as_of: Annotated[
        str | None, typer.Option(help="Tags as of this day (default: the published scores').")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count the changes, send nothing.")] = False,
) -> None:
    """Set lifecycle stage, value tier, interests and the product due soon as corp tags on each member's
    WeCom contact, sending only what changed since the last sync (health tags only with consent)."""
    from memberflow.outreach.connectors import FatalError, RetryableError
    from memberflow.outreach.run import now_china
    from memberflow.outreach.tags import sync_tags

    settings = _settings()
    day = _delivery_date(settings, as_of)
    try:
        report = _outreach_errors(lambda: sync_tags(settings, day, now_china(), dry_run=dry_run))
    except (FatalError, RetryableError) as exc:
        err.print(f"[red]tags not synced:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from None
    verb = "would change" if dry_run else "changed"
    console.print(
        f"{report.contacts:,} contacts; {verb} {report.changed:,} "
        f"(+{report.tags_added:,} tags, -{report.tags_removed:,})"
        + ("" if dry_run else f"; applied {report.applied:,}")
    )
    for error, n in report.failed.items():
        err.print(f"[yellow]failed {n:,}:[/yellow] {escape(error)} (tried again on the next sync)")
    if report.failed:
        raise typer.Exit(1)
