"""The command-line application, its consoles and the helpers every command group uses."""

from __future__ import annotations

import contextlib
import os
import sys
from datetime import date

import typer
from rich.console import Console

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
# Exit status when another run holds the workspace (EX_TEMPFAIL): nothing was done, try again later.
BUSY = 75


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
