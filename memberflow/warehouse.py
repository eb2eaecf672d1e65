"""The warehouse layer: the one way any stage reaches the DuckDB warehouse, and the gates' publication state.

DuckDB allows a single writing process, so every connection is taken under the workspace's lock file
(``warehouse_lock``): builds, scoring and deliveries queue up; the ops API reads under a shared lock. A
gate that passes *publishes* its tables (a small marker file under the quality folder); a build clears the
marker first, and a step that needs gated data calls ``require_published``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from memberflow.core.settings import Settings


class WarehouseBusy(TimeoutError):
    """The warehouse is being written (a build, scoring or a delivery) and the caller would not wait."""


class WorkspaceBusy(RuntimeError):
    """Another run is landing data in this workspace."""


@contextlib.contextmanager
def landing_lock(settings: Settings, what: str, shared: bool = False) -> Iterator[None]:
    """Hold the workspace's landing lock for a run that extracts, gates and publishes partitions (``what``
    names it for the message a second run gets). A second run does not wait: two at once would stage the
    same partitions over each other, so it raises WorkspaceBusy naming the first.

    ``shared``: the tasks of an Airflow extract run, one per table, which may run beside each other but not
    beside a command-line run."""
    settings.home.mkdir(parents=True, exist_ok=True)
    with open(settings.home / ".landing.lock", "a+") as handle:
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "an Airflow extract_channels run"
            raise WorkspaceBusy(
                f"another run is landing data in {settings.home} ({holder}): let it finish, then run again"
            ) from None
        if not shared:
            handle.truncate(0)
            handle.write(f"{what}, pid {os.getpid()}, since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
            handle.flush()
        try:
            yield
        finally:
            if not shared:
                handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def warehouse_lock(settings: Settings, shared: bool = False, timeout: float | None = None) -> Iterator[None]:
    """Hold the workspace's single-writer lock on the DuckDB warehouse.

    ``shared``: many readers at once (the ops API), none while a writer holds it. ``timeout``: seconds to
    wait before raising WarehouseBusy; None waits as long as it takes (pipeline steps queue up)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    with open(settings.home / ".warehouse.lock", "a") as handle:
        if timeout is None:
            fcntl.flock(handle, mode)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(handle, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise WarehouseBusy("the warehouse is being written; try again shortly") from None
                    time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def table_names(con) -> set[str]:
    """The tables and views of a warehouse connection."""
    return {row[0] for row in con.execute("select table_name from information_schema.tables").fetchall()}


@contextlib.contextmanager
def open_warehouse(settings: Settings, read_only: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection to the warehouse, taken under the single-writer lock (so no build is mid-write)."""
    with warehouse_lock(settings), duckdb.connect(str(settings.warehouse_path), read_only=read_only) as con:
        yield con


@contextlib.contextmanager
def read_warehouse(settings: Settings) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to a warehouse that must exist (a step that reads what a build made)."""
    if not settings.warehouse_path.exists():
        raise FileNotFoundError(f"no warehouse at {settings.warehouse_path}: run `memberflow build` first")
    with open_warehouse(settings) as con:
        yield con


def replace_rows(settings: Settings, ddl: str, table: str, where: str, params: list, rows) -> int:
    """Create ``table`` if needed and replace its rows matching ``where`` with ``rows`` (an Arrow table,
    columns by name), in one transaction under the single-writer lock. For the tables Python code owns."""
    with open_warehouse(settings, read_only=False) as con:
        con.execute(ddl)
        con.execute("begin")
        con.execute(f"delete from {table} where {where}", params)
        con.register("incoming", rows)
        columns = ", ".join(rows.column_names)
        con.execute(f"insert into {table} ({columns}) select {columns} from incoming")
        con.execute("commit")
    return rows.num_rows


# --- publication: which gate's tables passed since the last build ------------------------------------------


def published_marker(settings: Settings, gate: str) -> Path:
    return settings.quality_dir / "published" / f"{gate}.json"


def clear_published(settings: Settings, gate: str = "marts") -> None:
    """A build is about to change the warehouse: its gate is unpublished until it passes again."""
    published_marker(settings, gate).unlink(missing_ok=True)


def publish(settings: Settings, gate: str, day: str, status: str) -> None:
    """The gate passed for ``day``: what it checked may be used."""
    marker = published_marker(settings, gate)
    marker.parent.mkdir(parents=True, exist_ok=True)
    record = {"gate": gate, "date": day, "status": status, "published_at": datetime.now(UTC).isoformat()}
    marker.write_text(json.dumps(record) + "\n")


class NotPublishedError(RuntimeError):
    """The warehouse tables a step needs did not pass their quality gate."""


def require_published(settings: Settings, gate: str = "marts") -> dict:
    """The published gate's record; raises when the last build's gate failed or never ran."""
    marker = published_marker(settings, gate)
    if not marker.exists():
        raise NotPublishedError(
            f"the {gate} quality gate has not passed since the last build: run `memberflow build` "
            f"(or the transform DAG) and fix what `memberflow quality report` shows"
        )
    return json.loads(marker.read_text())
