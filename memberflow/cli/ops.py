"""Ops commands: serve the ops API and page, manage its tokens, read its audit log."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from memberflow.cli.base import _settings, app, console, err
from memberflow.core.settings import ConfigError, Settings


def _print_ops_access(settings: Settings, port: int, serving: bool) -> None:
    """A token to try the ops page with, and how to open it."""
    from memberflow.api.access import AccessStore

    issued = AccessStore.open(settings).create("demo", "ops", days=7)
    console.rule("ops page")
    if not serving:
        console.print("start it with:  memberflow serve   (or run the demo with --serve)")
    console.print(f"open:           http://127.0.0.1:{port}/")
    console.print(f"sign in with:   {issued.token}   (role ops, 7 days; `memberflow tokens` makes more)")


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
    role: Annotated[
        str,
        typer.Option(
            help="staff (导购: own queue), health_manager (健康管理师: own queue with health details), "
            "store_manager (店长: the queues of their store's staff), ops (every list, masked) or admin "
            "(may export unmasked)."
        ),
    ] = "ops",
    days: Annotated[int | None, typer.Option(help="Days until it expires; 0 for never.")] = 90,
    staff: Annotated[
        str | None, typer.Option(help="For staff and health_manager tokens: the staff member's WeCom userid.")
    ] = None,
    store: Annotated[
        str | None, typer.Option(help="For store_manager tokens: the store id (the staff directory's).")
    ] = None,
) -> None:
    """Create a token and print it once; only its hash is stored."""
    from memberflow.api.access import AccessStore

    settings = _settings()
    try:
        issued = AccessStore.open(settings).create(name, role, days or None, staff, store)
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
    table = Table("id", "name", "role", "staff", "store", "created", "expires", "revoked", "last used")
    keys = ("token_id", "name", "role", "staff_id", "store_id", "created_at", "expires_at", "revoked_at",
            "last_used_at")  # fmt: skip
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
