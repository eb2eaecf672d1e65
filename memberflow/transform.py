"""Transform: the dbt project over the landed Parquet, into the DuckDB warehouse.

Before dbt runs, memberflow writes what the project reads from the workspace besides landed data: an empty
schema file per landed table (so a channel that never delivered is an empty relation) and the blocked
identifier values, as tokens (only Python holds the identity key). dbt runs with its target, logs and
packages under ``$MEMBERFLOW_HOME/dbt`` so the repository stays clean, and one process at a time writes the
warehouse (DuckDB allows a single writer): ``warehouse_lock`` serializes the CLI, the DAG and tests.
With ``MEMBERFLOW_DBT_TARGET=postgres`` the same build runs on PostgreSQL (``memberflow.postgres``), with
``MEMBERFLOW_DBT_TARGET=spark`` on Apache Spark in local mode (``memberflow.spark``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from memberflow.core.contracts import CONTRACTS
from memberflow.core.phones import phone_token
from memberflow.core.settings import PgSettings, Settings, postgres_target, spark_target
from memberflow.dbt_env import (
    DBT_PROJECT_DIR,
    dated_target_path,
    dbt_args,
    dbt_environment,
    dbt_home,
    output_tail,
    read_run_results,
    run_dbt_process,
)
from memberflow.extract import file_fingerprint, landed_schema, loaded_at_for, partition_days
from memberflow.postgres import PHASE_ONE, load_landing, read_relation, replay_identity
from memberflow.serving import load_serving, refresh_serving, serving_tables
from memberflow.warehouse import clear_published, open_warehouse, warehouse_lock


def blocked_phones(extra: Sequence[str] = ()) -> list[str]:
    """Numbers that identify nobody: 1X-prefix runs of one digit, 1XY00000000 test numbers, hotlines."""
    numbers = {f"1{a}{d * 9}" for a in "3456789" for d in "0123456789"}
    numbers |= {f"1{a}{b}00000000" for a in "3456789" for b in "0123456789"}
    numbers |= {"13800138000"}
    return sorted(numbers | set(extra))


# Landed tables whose staging models are incremental: each build reads only partitions newer than the
# newest one it already holds and adds the events it has not seen. See plan_incremental_build.
INCREMENTAL_TABLES = (("wecom", "group_events"), ("miniprogram", "events"), ("livestream", "views"))
# Landed tables the incremental fct_member_daily_engagement and segment_outcomes also follow (orders through
# fct_orders; consent events for opt-outs): a change to an old partition of these rebuilds the first and
# makes the second recount every unsettled row (dbt_project/macros/engagement.sql, outcomes.sql).
PLANNED_TABLES = (
    *INCREMENTAL_TABLES,
    ("ecommerce", "orders"),
    ("store_pos", "orders"),
    ("consent", "events"),
)
# The SQL the incremental models depend on: a change to any of it rebuilds them.
INCREMENTAL_SQL = (
    "models/staging",
    "macros",
    "models/intermediate/activity",
    "models/marts/core/fct_orders.sql",
    "models/marts/core/fct_member_daily_engagement.sql",
)
BUILT_MANIFEST = "incremental_built.{target}.json"
PENDING_MANIFEST = "incremental_pending.{target}.json"


def _project_hash() -> str:
    """A hash of the SQL the incremental models depend on (INCREMENTAL_SQL). A change rebuilds them."""
    digest = hashlib.sha256()
    for name in INCREMENTAL_SQL:
        top = DBT_PROJECT_DIR / name
        for path in sorted(top.rglob("*")) if top.is_dir() else [top]:
            if path.is_file():
                digest.update(str(path.relative_to(DBT_PROJECT_DIR)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _manifest_path(settings: Settings, name: str) -> Path:
    target = "postgres" if postgres_target() else "spark" if spark_target() else "duckdb"
    return settings.home / "dbt" / name.format(target=target)


def plan_incremental_build(settings: Settings) -> dict[str, str | None]:
    """Decide, per planned table (PLANNED_TABLES), whether this build may only add to what the last one
    built.

    Adding is right when the landing only grew by newer partitions since the last successful build (the
    manifest ``record_incremental_build`` keeps). Anything else rebuilds the table from every partition:
    no earlier build, changed incremental SQL (INCREMENTAL_SQL), or a partition at or before the last build's
    newest one (or an unfinished build's) that was re-landed, withdrawn or landed late. Returns table ->
    the reason to rebuild (None: add). The decision is written to ``reference/incremental_build.parquet``
    for the models to read."""
    built_path = _manifest_path(settings, BUILT_MANIFEST)
    built = json.loads(built_path.read_text()) if built_path.exists() else None
    pending = _manifest_path(settings, PENDING_MANIFEST)
    # A pending manifest left behind is a build that did not finish (or an as-of build): its models may
    # already hold its partitions, so a partition it saw that changed since counts as changed too.
    attempted = json.loads(pending.read_text()) if pending.exists() else None
    current = {"project": _project_hash(), "partitions": {}}
    decisions: dict[str, str | None] = {}
    for channel, table in PLANNED_TABLES:
        name = f"{channel}.{table}"
        parts = {
            day.isoformat(): file_fingerprint(folder / "part-0.parquet")
            for day, folder in partition_days(settings.landing_dir / channel / table).items()
            if (folder / "part-0.parquet").exists()
        }
        current["partitions"][name] = parts
        if built is None:
            decisions[name] = "no earlier build"
            continue
        if any(m["project"] != current["project"] for m in (built, attempted) if m):
            decisions[name] = "incremental models or macros changed"
            continue
        changed: set[str] = set()
        for manifest in (m for m in (built, attempted) if m):
            before = manifest["partitions"].get(name, {})
            newest = max(before, default="")
            changed |= {d for d in set(before) | set(parts) if d <= newest and before.get(d) != parts.get(d)}
        decisions[name] = f"partitions changed: {', '.join(sorted(changed)[:5])}" if changed else None
    pending.parent.mkdir(parents=True, exist_ok=True)
    pending.write_text(json.dumps(current))
    rows = [{"relation": n, "rebuild": r is not None, "reason": r} for n, r in decisions.items()]
    schema = pa.schema([("relation", pa.string()), ("rebuild", pa.bool_()), ("reason", pa.string())])
    reference = settings.home / "reference"
    reference.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), reference / "incremental_build.parquet")
    return decisions


def record_incremental_build(settings: Settings) -> None:
    """After a successful build (not one limited by an as-of date): the landing it built becomes the base
    the next build compares with."""
    pending = _manifest_path(settings, PENDING_MANIFEST)
    if pending.exists():
        pending.replace(_manifest_path(settings, BUILT_MANIFEST))


def write_landing_schemas(settings: Settings) -> None:
    """An empty file with each landed table's columns, which the dbt source reads beside the partitions:
    a table never delivered is an empty relation (dbt_project/models/staging/_landing__sources.yml)."""
    for contract in CONTRACTS:
        target = settings.landing_dir / contract.channel / contract.table / "_schema" / "part-0.parquet"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(landed_schema(contract).empty_table(), target)


def write_build_inputs(settings: Settings) -> None:
    """Schema files of every landed table, the blocked-identifier reference and the incremental build's
    decisions (plan_incremental_build), under the workspace."""
    write_landing_schemas(settings)
    key = settings.id_key()
    rows = [
        {"id_type": "phone_token", "id_value": phone_token(p, key), "reason": "blocked_phone"}
        for p in blocked_phones(settings.blocked_phones)
    ]
    reference = settings.home / "reference"
    reference.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("id_type", pa.string()), ("id_value", pa.string()), ("reason", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), reference / "blocked_identifiers.parquet")
    plan_incremental_build(settings)


class DbtError(RuntimeError):
    """dbt reported failures; the message lists the failing nodes."""


@dataclass
class DbtResult:
    succeeded: int
    failures: list[str]
    seconds: dict[str, float] = field(default_factory=dict)  # per step, where the target reports them


def run_dbt(
    settings: Settings,
    command: Sequence[str],
    as_of: date | None = None,
    feature_dates: Sequence[date] = (),
) -> DbtResult:
    """Run a dbt command against the workspace's warehouse, in a child process.

    A child process keeps dbt's global state and its DuckDB connection out of the caller (the CLI reads
    the warehouse right after; Airflow tasks stay small). Results come from dbt's run_results.json.
    """
    args = dbt_args(command, as_of.isoformat() if as_of else None, [d.isoformat() for d in feature_dates])
    if spark_target():  # in the child process that holds the SparkSession and the metastore
        from memberflow import spark

        with warehouse_lock(settings):
            reply = spark.run_dbt(settings, args)
        return DbtResult(reply["succeeded"], reply["failures"])
    env = dbt_environment(settings)
    target = dated_target_path(settings) if as_of or feature_dates else Path(env["DBT_TARGET_PATH"])
    results_file = target / "run_results.json"
    results_file.unlink(missing_ok=True)
    with warehouse_lock(settings):
        completed = run_dbt_process(settings, args, target)
    if not results_file.exists():
        raise DbtError(
            f"dbt {' '.join(command)} could not run (exit {completed.returncode}):\n{output_tail(completed)}"
        )
    succeeded, failures = read_run_results(results_file)
    if completed.returncode != 0 and not failures:
        failures.append(f"dbt exited {completed.returncode} (see {env['DBT_LOG_PATH']}/dbt.log)")
    return DbtResult(succeeded, failures)


@dataclass
class SourceFreshness:
    table: str  # <channel>__<table>
    status: str  # pass, warn, error (dbt's verdict), or runtime error
    newest_load: str | None  # _loaded_at of the newest landed row (ISO 8601)
    age_hours: float | None


def source_freshness(settings: Settings) -> list[SourceFreshness]:
    """How old each landed channel table is: ``dbt source freshness`` on the landing source, whose
    thresholds (hours since the newest row's load time) are in _landing__sources.yml."""
    write_landing_schemas(settings)
    target = dbt_home(settings) / "freshness"
    (target / "sources.json").unlink(missing_ok=True)
    completed = run_dbt_process(settings, ["source", "freshness", "--select", "source:landing"], target)
    if not (target / "sources.json").exists():
        raise DbtError(
            f"dbt source freshness could not run (exit {completed.returncode}):\n{output_tail(completed)}"
        )
    from dbt.artifacts.resources.v1.components import FreshnessThreshold  # (dbt's own verdict, below)

    found = []
    for node in json.loads((target / "sources.json").read_text())["results"]:
        name = node["unique_id"].rsplit(".", 1)[-1]
        newest, age = node.get("max_loaded_at"), node.get("max_loaded_at_time_ago_in_s")
        status = node["status"]
        landed = _newest_partition_start(settings, name)
        if status in ("pass", "warn", "error") and landed is not None and age is not None:
            # dbt sees rows only: a day the channel delivered with no rows (no livestream on a Sunday)
            # still lands a partition, and the table is as fresh as its newest partition, judged with the
            # source's own thresholds by dbt's rule
            snapshot = datetime.fromisoformat(node["snapshotted_at"])
            if snapshot - landed < timedelta(seconds=age):
                newest, age = landed.isoformat(), (snapshot - landed).total_seconds()
                status = FreshnessThreshold.from_dict(node.get("criteria") or {}).status(age).value
        found.append(SourceFreshness(name, status, newest, None if age is None else round(age / 3600, 1)))
    return sorted(found, key=lambda f: f.table)


def _newest_partition_start(settings: Settings, source_table: str) -> datetime | None:
    """The start (China time, as ``_loaded_at``) of the newest day landed for ``<channel>__<table>``."""
    channel, _, table = source_table.partition("__")
    days = [
        d
        for d, folder in partition_days(settings.landing_dir / channel / table).items()
        if any(folder.iterdir())
    ]
    if not days:
        return None
    return loaded_at_for(max(days))


def build_warehouse(
    settings: Settings,
    as_of: date | None = None,
    feature_dates: Sequence[date] = (),
    snapshot: bool = True,
    full_refresh: bool = False,
    serve: bool = True,
) -> DbtResult:
    """Write the build inputs and run ``dbt build`` (models, unit tests and data tests).

    ``full_refresh``: rebuild every incremental model from scratch (``dbt build --full-refresh``), e.g.
    segment_outcomes' settled rows after the attribution rule changed.

    ``feature_dates``: the as-of dates member_features is computed for (default: the day after the data).
    ``snapshot``: keep the identity snapshot of a full build right away; callers that gate the marts first
    pass False and call ``save_identity_snapshot`` once the gate passed.
    ``serve``: on Spark and PostgreSQL, copy the serving slice into the serving store afterwards (False:
    leave it as it is, e.g. a benchmark building the same landing on two targets).
    """
    clear_published(settings, "marts")  # until the marts gate passes on what this build writes
    write_build_inputs(settings)
    refresh = ["--full-refresh"] if full_refresh else []
    if postgres_target():
        result = _build_postgres(settings, as_of, feature_dates, refresh, serve)
    elif spark_target():
        result = _build_spark(settings, as_of, feature_dates, refresh, serve)
    else:
        result = run_dbt(settings, ["build", *refresh], as_of, feature_dates)
        if result.failures:
            raise DbtError("dbt build failed:\n  " + "\n  ".join(result.failures))
    if as_of is None:
        record_incremental_build(settings)
        if snapshot:
            save_identity_snapshot(settings)
    return result


def _build_postgres(
    settings: Settings,
    as_of: date | None,
    feature_dates: Sequence[date],
    refresh: Sequence[str] = (),
    serve: bool = True,
) -> DbtResult:
    """The same build on PostgreSQL: load the landing zone, build what the identity replay reads, replay
    it in Python, build the rest (memberflow.postgres); then copy the serving slice into the serving store
    (memberflow.serving)."""
    with warehouse_lock(settings):
        load_landing(settings)
    first = run_dbt(settings, ["build", *refresh, "--select", *PHASE_ONE], as_of, feature_dates)
    if first.failures:
        raise DbtError("dbt build (identity inputs) failed:\n  " + "\n  ".join(first.failures))
    with warehouse_lock(settings):
        replay_identity(settings, as_of.isoformat() if as_of else None)
    rest = run_dbt(settings, ["build", *refresh, "--exclude", *PHASE_ONE], as_of, feature_dates)
    if rest.failures:
        raise DbtError("dbt build failed:\n  " + "\n  ".join(rest.failures))
    if serve:
        refresh_serving(settings)
    return DbtResult(first.succeeded + rest.succeeded, [])


def _build_spark(
    settings: Settings,
    as_of: date | None,
    feature_dates: Sequence[date],
    refresh: Sequence[str] = (),
    serve: bool = True,
) -> DbtResult:
    """The same build on Spark: both dbt phases and the identity replay between them in one child process
    that holds the SparkSession (memberflow.spark), which then writes the serving slice; loaded into the
    serving store here (memberflow.serving)."""
    from memberflow import spark

    tables, folder = serving_tables(), spark.spark_dir(settings) / "serving"
    with warehouse_lock(settings):
        reply = spark.build(
            settings, as_of, feature_dates, refresh, serve=(tables, folder) if serve else None
        )
    if reply["failures"]:
        what = "dbt build (identity inputs)" if reply["phase"] == "identity inputs" else "dbt build"
        raise DbtError(f"{what} failed on spark:\n  " + "\n  ".join(reply["failures"]))
    if serve:
        load_serving(settings, folder, tables)
    return DbtResult(reply["succeeded"], [], reply.get("seconds", {}))


def latest_landed_day(settings: Settings) -> date | None:
    """The newest date any table has a published partition for."""
    days = [day for c in CONTRACTS for day in partition_days(settings.landing_dir / c.channel / c.table)]
    return max(days, default=None)


def save_identity_snapshot(settings: Settings) -> Path:
    """Keep the published assignment and the splits so far: the next full build detects splits against it.

    Reads the marts of the configured target (the DuckDB warehouse, or PostgreSQL)."""
    # what a snapshot keeps: queries over the marts ({prefix}: the schema on PostgreSQL) and their types
    snapshot_queries = {
        "assignments": (
            "select id_type, id_value, member_id from {prefix}member_identifiers",
            {"id_type": pl.String, "id_value": pl.String, "member_id": pl.String},
        ),
        "splits": (
            "select member_id, split_from_member_id, changed_on as split_on from {prefix}member_id_history "
            "where change_type = 'split'",
            {"member_id": pl.String, "split_from_member_id": pl.String, "split_on": pl.Date},
        ),
    }

    folder = settings.home / "identity"
    folder.mkdir(parents=True, exist_ok=True)
    if spark_target():
        from memberflow import spark

        with warehouse_lock(settings):
            exported = spark.export(
                settings, {name: sql.format(prefix="") for name, (sql, _) in snapshot_queries.items()}, folder
            )
        for name, (_, schema) in snapshot_queries.items():
            pl.read_parquet(exported[name]).cast(schema).write_parquet(folder / f"{name}.parquet.tmp")
            exported[name].unlink()
    elif postgres_target():
        pg = PgSettings.from_env()
        for name, (sql, schema) in snapshot_queries.items():
            frame = read_relation(pg, sql.format(prefix=f"{pg.schema}."), schema)
            frame.write_parquet(folder / f"{name}.parquet.tmp")
    else:
        with open_warehouse(settings) as con:
            for name, (sql, _) in snapshot_queries.items():
                con.sql(sql.format(prefix="")).write_parquet(str(folder / f"{name}.parquet.tmp"))
    for name in snapshot_queries:
        (folder / f"{name}.parquet.tmp").replace(folder / f"{name}.parquet")
    return folder
