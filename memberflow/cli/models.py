"""Model commands: train, score, backtest, and the registry (status, rollback)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from memberflow.cli.base import _parse_date, _settings, app, console, err
from memberflow.core.settings import ConfigError, Settings


def _monitoring_cell(report: dict | None) -> str:
    """The newest live check in a few words: its status and day, and the largest score drift."""
    if report is None:
        return "not checked"
    drift = [c["value"] for c in report["checks"] if c["kind"] == "score_drift" and c["value"] is not None]
    return f"{report['status']} on {report['as_of']}" + (f" (score PSI {max(drift):.3f})" if drift else "")


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
    from ml.monitor import latest_report

    table = Table(title="models (held-out test half), today's scores and live monitoring")
    for column in ("model", "champion", "AUC", "recency AUC", "Brier", "ECE", "scored members", "monitoring"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name in MODELS:
        ref = alias_version(settings, name, CHAMPION)
        if ref is None:
            table.add_row(name, "none", "", "", "", "", "0", "")
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
            _monitoring_cell(latest_report(settings, name)),
        )
    console.print(table)
    for note in notes:
        console.print(escape(note), soft_wrap=True)
    console.print(
        f"MLflow store: {settings.mlflow_uri}   (memberflow models status; mlflow ui --backend-store-uri …)"
    )


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


@models_app.command("monitor")
def models_monitor(
    as_of: Annotated[str, typer.Option(help="The scoring day to check (YYYY-MM-DD).")],
    model: Annotated[
        str | None, typer.Option("--model", help="One model (default: every model with a champion).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The checks as JSON.")] = False,
) -> None:
    """Live monitoring of the champions: realized AUC, Brier and calibration of every scoring date whose
    labels have landed, beside the version's evaluation; feature and score drift (PSI) of the day's
    population against the one the version was evaluated on. Exit 1 when a model is critical (its segments
    pause)."""
    import json

    from memberflow.core.vocab import MODELS
    from ml.monitor import monitor
    from ml.registry import CHAMPION, alias_version

    settings = _settings()
    day = _parse_date(as_of)
    # every model: those with a champion; a model named: that one, or the error saying it has none
    names = (
        [_model_name(model)]
        if model
        else [m for m in MODELS if _ml_errors(lambda m=m: alias_version(settings, m, CHAMPION))]
    )
    reports = [_ml_errors(lambda name=name: monitor(settings, name, day)) for name in names]
    if as_json:
        print(json.dumps([r.to_dict() for r in reports], ensure_ascii=False, indent=1, default=str))
    else:
        for report in reports:
            table = Table(title=f"{report.model} v{report.version} on {report.as_of}: {report.status}")
            for column in ("check", "name", "value", "reference", "rows", "level"):
                table.add_column(
                    column, justify="right" if column in ("value", "reference", "rows") else "left"
                )
            shown = [c for c in report.checks if c.kind != "feature_drift" or c.level != "ok"]
            drift = sorted(
                (c for c in report.checks if c.kind == "feature_drift"), key=lambda c: -(c.value or 0)
            )
            for c in [*shown, *[d for d in drift[:5] if d.level == "ok"]]:
                table.add_row(
                    c.kind,
                    c.name,
                    "-" if c.value is None else f"{c.value:.4f}",
                    "-" if c.reference is None else f"{c.reference:.4f}",
                    f"{c.rows:,}",
                    c.level,
                )
            console.print(table)
            for reason in report.reasons:
                console.print(f"  {escape(reason)}")
    raise typer.Exit(1 if any(r.status == "critical" for r in reports) else 0)


@models_app.command("uplift")
def models_uplift(
    as_of: Annotated[str, typer.Option(help="Outcomes matured by this day are used (YYYY-MM-DD).")],
    segment: Annotated[
        str | None,
        typer.Option(help="One segment (default: every segment that says rank_by_uplift: true)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The backtests as JSON.")] = False,
) -> None:
    """Train each segment's uplift model on its holdout history and backtest it against the segment's own
    rank_by on the newest two weeks; promote it (the segment then ranks by predicted uplift under its daily
    cap) only when it wins in at least 90 % of bootstrap resamples. A segment without enough history is
    reported with what it needs. Exit 1 when a segment named with --segment cannot be trained."""
    import json

    from memberflow.outreach.uplift import train_segments
    from memberflow.segments import SegmentConfigError, load_segments

    settings = _settings()
    day = _parse_date(as_of)
    try:
        library = load_segments()
    except SegmentConfigError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]", soft_wrap=True)
        raise typer.Exit(2) from exc
    by_name = {s.name: s for s in library}
    if segment is not None and segment not in by_name:
        err.print(f"[red]unknown segment '{segment}'; known: {', '.join(by_name)}[/red]")
        raise typer.Exit(2)
    chosen = [by_name[segment]] if segment else [s for s in library if s.rank_by_uplift]
    if not chosen:
        err.print("[red]no segment says rank_by_uplift: true; name one with --segment[/red]")
        raise typer.Exit(2)
    trained, refused = _ml_errors(lambda: train_segments(settings, chosen, day))
    results = [r.to_dict() for r in trained]
    if as_json:
        print(json.dumps({"trained": results, "not_enough_history": refused}, ensure_ascii=False, indent=1))
    else:
        for r in results:
            verdict = "promoted to champion" if r["champion"] else "not promoted"
            console.print(f"{r['segment']}: uplift model v{r['version']} {verdict}: {escape(r['reason'])}")
        for name, why in refused.items():
            console.print(f"{name}: no uplift model: {escape(why)}")
    raise typer.Exit(1 if segment is not None and refused else 0)
