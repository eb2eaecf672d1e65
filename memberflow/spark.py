"""Apache Spark (local mode) as the dbt target: landed Parquet read in place, identity replayed per component.

With ``MEMBERFLOW_DBT_TARGET=spark`` a build runs in one child process (``python -m memberflow.spark``) that
holds the SparkSession for all of it. dbt-spark's session method takes the process's active session, and
the Hive metastore is an embedded Derby database that only one process may open at a time, so everything
that touches the warehouse (the build, the identity replay between its phases, reading marts back) happens
in such a child and the caller never holds the metastore. A build is:

1. ``prepare_sources``: every landed table as an external Parquet table over its landing folder
   (``<schema>_raw.<channel>__<table>__files``, partitioned by the ``dt=`` folders, which Spark lists when
   a query first reads the table in the process: no partitions in the metastore), and a view
   ``<schema>_raw.<channel>__<table>`` with ``_partition_dt``, the ``landing`` source on this target.
   Nothing is copied; the quarantined rows (few) are loaded into ``<schema>_raw.quarantine``;
2. ``dbt build`` of the nodes the identity graph needs (staging, identity nodes and checked edges);
3. ``replay_identity``: the connected components of the kept edges by min-label propagation in Spark,
   then ``memberflow.identity``'s replay per group of whole components (``applyInPandas``), splits against
   the workspace snapshot in Spark; written to ``<schema>_raw.identity_replay``, which the non-DuckDB
   variant of ``int_identity_resolution`` selects;
4. ``dbt build`` of everything else.

Warehouse, metastore and Derby's log live under ``$MEMBERFLOW_HOME/spark``. Settings (environment):
``MEMBERFLOW_SPARK_SCHEMA`` (default memberflow), ``MEMBERFLOW_SPARK_MASTER`` (default local[2]),
``MEMBERFLOW_SPARK_SHUFFLE_PARTITIONS`` (default 2), ``MEMBERFLOW_SPARK_REPLAY_GROUPS`` (how many groups of
components the replay runs as, default 8), ``MEMBERFLOW_SPARK_DRIVER_MEMORY`` (default 4g).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import pyarrow as pa

import memberflow
from memberflow.core.contracts import CONTRACTS
from memberflow.core.settings import Settings, SparkSettings, SparkSettingsError
from memberflow.dbt_env import dbt_args
from memberflow.extract import landed_schema, sql_type

PHASE_ONE = ("+int_identity_nodes", "+int_identity_edges_checked")


def spark_dir(settings: Settings) -> Path:
    return settings.home / "spark"


def spark_conf(settings: Settings, spark: SparkSettings) -> dict[str, str]:
    """The session's settings (dbt_project/profiles.yml's spark target repeats them for a plain ``dbt``)."""
    home = spark_dir(settings)
    return {
        "spark.master": spark.master,
        # in local mode the driver is the executor too: its heap holds the shuffles and the replay's groups
        "spark.driver.memory": spark.driver_memory,
        "spark.app.name": "memberflow",
        "spark.sql.warehouse.dir": str(home / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL": (
            f"jdbc:derby:;databaseName={home / 'metastore_db'};create=true"
        ),
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={home}",
        "spark.sql.session.timeZone": "UTC",
        # dbt-spark sets ANSI mode off on every statement it runs (whatever the profile says); the rest of
        # the process runs the same SQL dialect. Without ANSI mode a double-quoted name is a string literal:
        # models quote names with adapter.quote (backticks here)
        "spark.sql.ansi.enabled": "false",
        # a landed table's partitions are its dt= folders as listed when a query first reads it (once per
        # process), not partitions registered in the metastore: nothing to re-register, nothing stale
        "spark.sql.hive.manageFilesourcePartitions": "false",
        # a landed table has a folder per day: list them in the driver, not with a Spark job per table read
        "spark.sql.sources.parallelPartitionDiscovery.threshold": "100000",
        "spark.sql.shuffle.partitions": str(spark.shuffle_partitions),
        "spark.ui.enabled": "false",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Parquet written for the serving store (and by scoring) carries standard microsecond timestamps
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    }


def check_java(spark: SparkSettings | None = None) -> None:
    """Spark needs a Java runtime: say so plainly instead of PySpark's gateway error."""
    java_home = (spark or SparkSettings.from_env()).java_home
    java = Path(java_home) / "bin" / "java" if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise SparkSettingsError(
            "the spark target needs Java 17 or later: install a JDK and put `java` on PATH (or set JAVA_HOME)"
        )


def start_session(settings: Settings, spark: SparkSettings):
    """The SparkSession of this process, with Hive support (tables outlive the process)."""
    check_java(spark)
    from pyspark.sql import SparkSession

    spark_dir(settings).mkdir(parents=True, exist_ok=True)
    # Python workers (the replay's applyInPandas) run this interpreter and import this memberflow
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.enableHiveSupport()
    for key, value in spark_conf(settings, spark).items():
        builder = builder.config(key, value)
    try:
        session = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start: PySpark only says the gateway exited
        raise SparkSettingsError(f"Spark could not start ({spark.master}): {exc}") from exc
    session.sparkContext.setLogLevel("ERROR")
    return session


# --- the landing source -------------------------------------------------------------------------------


def _columns(schema: pa.Schema) -> str:
    return ", ".join(f"`{field.name}` {sql_type(field.type, 'spark')}" for field in schema)


def prepare_sources(session, settings: Settings, spark: SparkSettings) -> None:
    """The landing source over the workspace's Parquet, read in place (module docstring, step 1)."""
    raw = spark.raw_schema
    session.sql(f"create database if not exists {spark.schema}")
    session.sql(f"create database if not exists {raw}")
    for contract in CONTRACTS:
        name = f"{contract.channel}__{contract.table}"
        folder = settings.landing_dir / contract.channel / contract.table
        folder.mkdir(parents=True, exist_ok=True)
        schema = landed_schema(contract)
        # external: dropping the table leaves the files; the table is made again so a changed contract
        # (new columns) is picked up. Its partitions are the dt= folders there when a query first lists
        # them (spark.sql.hive.manageFilesourcePartitions is off): a folder being swapped in starts with a
        # dot and is not one; _schema is not one either
        session.sql(f"drop view if exists {raw}.{name}")
        session.sql(f"drop table if exists {raw}.{name}__files")
        session.sql(
            f"create table {raw}.{name}__files ({_columns(schema)}, dt date) using parquet "
            f"partitioned by (dt) location '{folder}'"
        )
        names = ", ".join(f"`{field.name}`" for field in schema)
        session.sql(
            f"create view {raw}.{name} as select {names}, dt as _partition_dt from {raw}.{name}__files"
        )
    # the unit tests' SQL fixtures spell a list of strings as DuckDB and PostgreSQL do
    from pyspark.sql.types import ArrayType, StringType

    session.udf.register(
        "string_to_array",
        lambda text, sep: None if text is None else text.split(sep),
        ArrayType(StringType()),
    )
    from memberflow.postgres import quarantined_rows

    quarantine = quarantined_rows(settings)
    frame = session.createDataFrame(
        quarantine.to_pandas(), schema=_columns(quarantine.schema).replace("`", "")
    )
    frame.write.mode("overwrite").format("parquet").saveAsTable(f"{raw}.quarantine")


# --- identity -----------------------------------------------------------------------------------------

REPLAY_SCHEMA = (
    "record string, id_type string, id_value string, member_id string, first_seen_on date, "
    "retired_member_id string, merged_into_member_id string, merged_on date"
)


def connected_components(session, keys, links):
    """Each key's component: the smallest key connected to it, by min-label propagation with pointer
    jumping until no label changes (as many rounds as the graph is deep, halved by the jumps).

    ``keys``: a frame of ``key``; ``links``: a frame of ``a``, ``b`` (keys).
    Returns ``key``, ``component``."""
    from pyspark.sql import functions as F

    labels = keys.select("key", F.col("key").alias("label")).localCheckpoint()
    links = links.localCheckpoint()
    while True:
        offered = (
            links.join(labels, links.a == labels.key)
            .select(F.col("b").alias("key"), "label")
            .unionByName(links.join(labels, links.b == labels.key).select(F.col("a").alias("key"), "label"))
        )
        lowered = labels.unionByName(offered).groupBy("key").agg(F.min("label").alias("label"))
        parent = lowered.select(F.col("key").alias("p_key"), F.col("label").alias("p_label"))
        jumped = (
            lowered.join(parent, lowered.label == parent.p_key, "left")
            .select("key", F.least("label", F.coalesce("p_label", "label")).alias("label"))
            .localCheckpoint()
        )
        changed = (
            jumped.alias("new")
            .join(labels.alias("old"), "key")
            .where(F.col("new.label") != F.col("old.label"))
            .limit(1)
            .count()
        )
        labels = jumped
        if changed == 0:
            return labels.select("key", F.col("label").alias("component"))


def _replay_group(aliases: str):
    """The replay of one group of whole components (a pandas frame of nodes and edges) in Spark's
    Python workers: ``memberflow.identity.resolve_aliased``, whose outcome for a component depends on that
    component only (founder order, edge order and merge days are all within it)."""

    def replay(frame):
        import pandas as pd
        import polars as pl

        from memberflow.identity import resolve_aliased

        data = pl.from_pandas(frame).with_columns(pl.col("first_seen_on").cast(pl.Date))
        nodes = data.filter(pl.col("kind") == "node").select("id_type", "id_value", "first_seen_on")
        edges = data.filter(pl.col("kind") == "edge").select(
            id_type_a="id_type",
            id_value_a="id_value",
            id_type_b="id_type_b",
            id_value_b="id_value_b",
            first_seen_on="first_seen_on",
        )
        resolution = resolve_aliased(nodes, edges, Path(aliases))
        out = pl.concat(
            [
                resolution.assignments.with_columns(record=pl.lit("assignment")),
                resolution.merges.with_columns(record=pl.lit("merge")),
            ],
            how="diagonal",
        )
        columns = [c.split()[0] for c in REPLAY_SCHEMA.split(", ")]
        for column in columns:
            if column not in out.columns:
                out = out.with_columns(
                    pl.lit(None, dtype=pl.Date if column.endswith("_on") else pl.String).alias(column)
                )
        return out.select(columns).to_pandas() if out.height else pd.DataFrame(columns=columns)

    return replay


def replay_identity(session, settings: Settings, spark: SparkSettings, as_of_date: str | None) -> int:
    """What ``memberflow.identity.resolution_records`` gives over the whole graph, computed per group of
    connected components, into ``<schema>_raw.identity_replay``. Returns its row count."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from memberflow.identity import ALIASES_FILE, NODE_SEP

    snapshot = settings.home / "identity"
    nodes = session.table(f"{spark.schema}.int_identity_nodes").select("id_type", "id_value", "first_seen_on")
    edges = (
        session.table(f"{spark.schema}.int_identity_edges_checked")
        .where("drop_reason is null")
        .select("id_type_a", "id_value_a", "id_type_b", "id_value_b", "first_seen_on")
    )

    def key(id_type, id_value):
        return F.concat_ws(NODE_SEP, id_type, id_value)

    keyed_nodes = nodes.withColumn("key", key("id_type", "id_value"))
    keyed_edges = edges.withColumn("a", key("id_type_a", "id_value_a")).withColumn(
        "b", key("id_type_b", "id_value_b")
    )
    keys = (
        keyed_nodes.select("key")
        .unionByName(keyed_edges.select(F.col("a").alias("key")))
        .unionByName(keyed_edges.select(F.col("b").alias("key")))
        .distinct()
    )
    components = connected_components(session, keys, keyed_edges.select("a", "b"))
    group = F.pmod(F.xxhash64("component"), F.lit(spark.replay_groups)).alias("replay_group")
    node_rows = keyed_nodes.join(components, "key").select(
        F.lit("node").alias("kind"),
        "id_type",
        "id_value",
        F.lit(None).cast("string").alias("id_type_b"),
        F.lit(None).cast("string").alias("id_value_b"),
        "first_seen_on",
        group,
    )
    edge_rows = keyed_edges.join(components, keyed_edges.a == components.key).select(
        F.lit("edge").alias("kind"),
        F.col("id_type_a").alias("id_type"),
        F.col("id_value_a").alias("id_value"),
        "id_type_b",
        "id_value_b",
        "first_seen_on",
        group,
    )
    replayed = (
        node_rows.unionByName(edge_rows)
        .repartition(spark.replay_groups, "replay_group")
        .groupBy("replay_group")
        .applyInPandas(_replay_group(str(snapshot / ALIASES_FILE)), REPLAY_SCHEMA)
        .localCheckpoint()
    )
    assignments = replayed.where("record = 'assignment'")
    merges = replayed.where("record = 'merge'")

    # splits: against the last successful build's assignment, over the whole graph (an identifier that
    # left a member is no split when that member was retired by a merge in any component)
    split_schema = "member_id string, split_from_member_id string, split_on date"
    splits = session.createDataFrame([], split_schema + ", priority int, position bigint")
    if as_of_date in (None, "", "None") and nodes.limit(1).count():
        if (snapshot / "splits.parquet").exists():
            earlier = session.read.parquet(str(snapshot / "splits.parquet")).select(
                "member_id", "split_from_member_id", F.col("split_on").cast("date")
            )
            splits = splits.unionByName(
                earlier.withColumn("priority", F.lit(0)).withColumn(
                    "position", F.monotonically_increasing_id()
                )
            )
        if (snapshot / "assignments.parquet").exists():
            previous = session.read.parquet(str(snapshot / "assignments.parquet"))
            today = nodes.agg(F.max("first_seen_on")).first()[0]
            moved = (
                previous.select("id_type", "id_value", F.col("member_id").alias("old"))
                .join(
                    assignments.select("id_type", "id_value", F.col("member_id").alias("new")),
                    ["id_type", "id_value"],
                )
                .where(F.col("old") != F.col("new"))
                .join(merges.select(F.col("retired_member_id").alias("old")).distinct(), "old", "left_anti")
            )
            splits = splits.unionByName(
                moved.select(F.col("new").alias("member_id"), F.col("old").alias("split_from_member_id"))
                .distinct()
                .withColumn("split_on", F.lit(today).cast("date"))
                .withColumn("priority", F.lit(1))
                .withColumn("position", F.lit(0).cast("bigint"))
            )
    first = Window.partitionBy("member_id", "split_from_member_id").orderBy("priority", "position")
    split_rows = (
        splits.withColumn("n", F.row_number().over(first)).where("n = 1").withColumn("record", F.lit("split"))
    )
    columns = [
        "id_type",
        "id_value",
        "member_id",
        "first_seen_on",
        "record",
        "retired_member_id",
        "merged_into_member_id",
        "merged_on",
        "split_from_member_id",
        "split_on",
    ]
    typed = {c: "date" if c.endswith("_on") else "string" for c in columns}

    def full(frame):
        return frame.select(
            [(F.col(c) if c in frame.columns else F.lit(None)).cast(typed[c]).alias(c) for c in columns]
        )

    records = full(replayed).unionByName(full(split_rows))
    records.write.mode("overwrite").format("parquet").saveAsTable(f"{spark.raw_schema}.identity_replay")
    return session.table(f"{spark.raw_schema}.identity_replay").count()


# --- dbt in this process ------------------------------------------------------------------------------


def _run_dbt_here(settings: Settings, args: list[str]) -> dict:
    """``dbt <args>`` in this process (its adapter takes this process's SparkSession); the results are
    run_results.json's, read like memberflow.transform.run_dbt reads them."""
    from dbt.cli.main import dbtRunner

    from memberflow.dbt_env import DBT_PROJECT_DIR, dbt_environment, read_run_results

    results_file = Path(dbt_environment(settings)["DBT_TARGET_PATH"]) / "run_results.json"
    results_file.unlink(missing_ok=True)
    outcome = dbtRunner().invoke(
        [*args, "--project-dir", str(DBT_PROJECT_DIR), "--profiles-dir", str(DBT_PROJECT_DIR)]
    )
    if not results_file.exists():
        return {"succeeded": 0, "failures": [f"dbt {' '.join(args)} could not run: {outcome.exception}"]}
    succeeded, failures = read_run_results(results_file)
    if not outcome.success and not failures:
        failures.append(f"dbt {' '.join(args)} failed: {outcome.exception}")
    return {"succeeded": succeeded, "failures": failures}


def _build_here(settings: Settings, request: dict) -> dict:
    seconds: dict[str, float] = {}
    clock = time.monotonic()

    def lap(step: str) -> None:
        nonlocal clock
        seconds[step] = round(time.monotonic() - clock, 1)
        clock = time.monotonic()

    spark = SparkSettings.from_env()
    session = start_session(settings, spark)
    as_of, dates, refresh = request["as_of"], request["feature_dates"], request["refresh"]
    lap("session")
    prepare_sources(session, settings, spark)
    lap("sources")
    first = _run_dbt_here(settings, dbt_args(["build", *refresh, "--select", *PHASE_ONE], as_of, dates))
    lap("identity inputs")
    if first["failures"]:
        return {**first, "phase": "identity inputs", "seconds": seconds}
    replayed = replay_identity(session, settings, spark, as_of)
    lap("replay")
    rest = _run_dbt_here(settings, dbt_args(["build", *refresh, "--exclude", *PHASE_ONE], as_of, dates))
    lap("rest")
    if not rest["failures"] and request.get("serve"):
        write_serving(session, spark, request["serve"]["tables"], Path(request["serve"]["folder"]))
        lap("serving copy")
    return {
        "succeeded": first["succeeded"] + rest["succeeded"],
        "failures": rest["failures"],
        "phase": "rest",
        "replayed": replayed,
        "seconds": seconds,
    }


def _export(session, spark: SparkSettings, queries: dict[str, str], folder: str) -> list[str]:
    """Each query's rows as a Parquet file (Arrow types: timestamps in UTC)."""
    import pyarrow.parquet as pq

    session.sql(f"use {spark.schema}")
    for name, sql in queries.items():
        pq.write_table(session.sql(sql).toArrow(), Path(folder) / f"{name}.parquet")
    return sorted(queries)


def _dbt_here(settings: Settings, request: dict) -> dict:
    start_session(settings, SparkSettings.from_env())
    return _run_dbt_here(settings, request["args"])


def write_serving(session, spark: SparkSettings, tables: Sequence[str], folder: Path) -> None:
    """Each table of the target schema as Parquet files under ``folder/<table>/``, written by the executors
    (memberflow.serving loads them into the serving store)."""
    shutil.rmtree(folder, ignore_errors=True)
    for table in tables:
        session.table(f"{spark.schema}.{table}").write.mode("overwrite").parquet(str(folder / table))


def _serve_here(settings: Settings, request: dict) -> dict:
    spark = SparkSettings.from_env()
    session = start_session(settings, spark)
    write_serving(session, spark, request["tables"], Path(request["folder"]))
    return {"served": list(request["tables"])}


def _export_here(settings: Settings, request: dict) -> dict:
    spark = SparkSettings.from_env()
    session = start_session(settings, spark)
    return {"exported": _export(session, spark, request["queries"], request["folder"])}


def _replay_here(settings: Settings, request: dict) -> dict:
    """Only the identity replay, over the identity tables the last build made (phase one); then the
    request's queries, if any, exported as ``export`` does."""
    spark = SparkSettings.from_env()
    session = start_session(settings, spark)
    replayed = replay_identity(session, settings, spark, request.get("as_of"))
    return {
        "replayed": replayed,
        "exported": _export(session, spark, request.get("queries") or {}, request.get("folder") or "."),
    }


COMMANDS = {
    "build": _build_here,
    "export": _export_here,
    "replay": _replay_here,
    "serve": _serve_here,
    "dbt": _dbt_here,
}


def _command(name: str):
    """A command of this module, or ``package.module:function`` for a job another layer defines (scoring
    lives in ml, which this module does not import)."""
    if ":" in name:
        module, function = name.split(":")
        return getattr(importlib.import_module(module), function)
    return COMMANDS[name]


# --- the caller's side --------------------------------------------------------------------------------


class SparkBuildError(RuntimeError):
    """The Spark child process failed before it could report."""


def _run_child(settings: Settings, command: str, request: dict) -> dict:
    """Run ``command`` in a child process holding the SparkSession (and the metastore) while it runs."""
    from memberflow.dbt_env import dbt_environment

    check_java(SparkSettings.from_env())  # bad settings stop here, before a JVM starts
    name = command.rsplit(":", 1)[-1]
    reply = spark_dir(settings) / f"{name}.reply.json"
    reply.parent.mkdir(parents=True, exist_ok=True)
    reply.unlink(missing_ok=True)
    package_root = str(Path(memberflow.__file__).resolve().parents[1])
    env = {**os.environ, **dbt_environment(settings), "MEMBERFLOW_DBT_TARGET": "spark"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env["PYSPARK_PYTHON"] = sys.executable
    completed = subprocess.run(
        [sys.executable, "-m", "memberflow.spark", command, json.dumps(request), str(reply)],
        env=env,
        cwd=spark_dir(settings),
        capture_output=True,
        text=True,
        check=False,
    )
    (spark_dir(settings) / f"{name}.log").write_text(completed.stdout + completed.stderr)
    if not reply.exists():
        tail = "\n".join((completed.stdout + completed.stderr).strip().splitlines()[-25:])
        raise SparkBuildError(f"spark {command} failed (exit {completed.returncode}):\n{tail}")
    return json.loads(reply.read_text())


def build(
    settings: Settings,
    as_of: date | None,
    feature_dates: Sequence[date],
    refresh: Sequence[str] = (),
    serve: tuple[Sequence[str], Path] | None = None,
) -> dict:
    """The two-phase build with the replay between (module docstring), in one child process; ``serve``
    (tables, folder): then write those tables as Parquet for the serving store (``write_serving``)."""
    return _run_child(
        settings,
        "build",
        {
            "as_of": as_of.isoformat() if as_of else None,
            "feature_dates": [d.isoformat() for d in feature_dates],
            "refresh": list(refresh),
            "serve": {"tables": list(serve[0]), "folder": str(serve[1])} if serve else None,
        },
    )


def run_dbt(settings: Settings, args: Sequence[str]) -> dict:
    """``dbt <args>`` on the Spark target in a child process (its session, its metastore); succeeded count
    and failures as memberflow.transform.run_dbt reads them."""
    return _run_child(settings, "dbt", {"args": list(args)})


def serve(settings: Settings, tables: Sequence[str], folder: Path) -> None:
    """Write ``tables`` as Parquet for the serving store, as a build does at its end."""
    _run_child(settings, "serve", {"tables": list(tables), "folder": str(folder)})


def run_job(settings: Settings, job: str, request: dict) -> dict:
    """Run ``package.module:function(settings, request)`` in a child process holding the SparkSession
    (``start_session`` gives the function the session); its JSON-able result comes back."""
    return _run_child(settings, job, request)


def export(settings: Settings, queries: dict[str, str], folder: Path) -> dict[str, Path]:
    """Run each query (on the target schema) and write its rows to ``folder/<name>.parquet``."""
    folder.mkdir(parents=True, exist_ok=True)
    _run_child(settings, "export", {"queries": queries, "folder": str(folder)})
    return {name: folder / f"{name}.parquet" for name in queries}


def replay(settings: Settings, as_of: date | None, queries: dict[str, str], folder: Path) -> dict[str, Path]:
    """The identity replay alone (against the workspace's identity snapshot as it is now) over the last
    build's identity tables, into ``<schema>_raw.identity_replay``; then ``queries`` as ``export`` runs
    them, in the same child process."""
    folder.mkdir(parents=True, exist_ok=True)
    request = {"as_of": as_of.isoformat() if as_of else None, "queries": queries, "folder": str(folder)}
    _run_child(settings, "replay", request)
    return {name: folder / f"{name}.parquet" for name in queries}


def main(argv: Sequence[str]) -> int:
    command, request, reply = argv
    settings = Settings.from_env()
    result = _command(command)(settings, json.loads(request))
    Path(reply).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
