"""The serving store: the DuckDB file that every stage after dbt reads, whichever target dbt built on.

On the DuckDB target dbt builds the warehouse in that file and there is nothing to do. On Spark and on
PostgreSQL the build copies the *serving slice* into it at the end of its run: every mart, plus the few
intermediate and staging relations that gates, training sets, segments, reports and the ops API read
(``SERVING_EXTRA``). The copy crosses as Parquet (Spark's executors write each relation in parallel; from
PostgreSQL it streams in batches), and DuckDB loads the files in one transaction under the single-writer
lock. So the marts gate validates exactly what training, segments, delivery and the API then read, and
those stages work unchanged on every target. Per-member work that grows with the population (scoring,
``ml.spark_score``) runs on Spark itself and writes its results here.

Why a copy instead of every stage querying the target: delivery planning, the send ledger and the API make
many small reads and single-row writes a day, which a Spark job answers in seconds at best (and each job
here starts a JVM); the serving slice is the size of the member base, not of its history, and DuckDB reads
it in milliseconds. An API served from several machines would need a shared store fed the same way
(docs/scaling.md).
"""

from __future__ import annotations

from pathlib import Path

from memberflow import spark
from memberflow.core.settings import PgSettings, Settings, spark_target
from memberflow.dbt_env import DBT_PROJECT_DIR
from memberflow.postgres import write_serving
from memberflow.warehouse import open_warehouse

# Relations outside models/marts that code after dbt reads, and who reads them.
SERVING_EXTRA = {
    "int_member_milestones": "training labels (ml.datasets: lost members)",
    "int_report_period": "reports (the last day the reports count)",
    "int_identity_evidence": "the identity report",
    "category_catalog": "the marts gate (interests)",
    "stg_wecom__contacts": "segments (WeCom contacts)",
    "stg_wecom__group_events": "segments (check-in group events)",
}


def serving_tables() -> list[str]:
    """Every mart of the dbt project and SERVING_EXTRA, in a stable order."""
    marts = sorted(path.stem for path in (DBT_PROJECT_DIR / "models" / "marts").rglob("*.sql"))
    return marts + sorted(set(SERVING_EXTRA) - set(marts))


INSTANT = "TIMESTAMP WITH TIME ZONE"


class ServingCopyError(RuntimeError):
    """A relation of the serving slice did not arrive from the build target."""


def load_serving(settings: Settings, folder: Path, tables: list[str]) -> dict[str, int]:
    """Replace each table of the serving store with the Parquet files in ``folder/<table>/``, all in one
    transaction (a reader sees the old slice or the new one, never half of each); returns rows per table.

    Timestamps arrive as instants (Spark's ``timestamp`` is one) and are stored as UTC wall-clock times, as
    the DuckDB target stores them."""
    missing = [t for t in tables if not any((folder / t).glob("*.parquet"))]
    if missing:
        raise ServingCopyError(
            f"the build target wrote no Parquet for {', '.join(missing)} under {folder}: "
            "the build did not finish its copy; run `memberflow build` again"
        )
    rows: dict[str, int] = {}
    with open_warehouse(settings, read_only=False) as con:
        con.execute("set TimeZone = 'UTC'")
        con.execute("begin")
        kinds = dict(con.execute("select table_name, table_type from information_schema.tables").fetchall())
        for table in tables:
            files = "read_parquet('{}')".format(str(folder / table / "*.parquet").replace("'", "''"))
            select = ", ".join(
                f'timezone(\'UTC\', "{name}") as "{name}"' if kind == INSTANT else f'"{name}"'
                for name, kind, *_ in con.execute(f"describe select * from {files}").fetchall()
            )
            if kinds.get(table) == "VIEW":  # a workspace the DuckDB target built before
                con.execute(f"drop view {table}")
            con.execute(f"create or replace table {table} as select {select} from {files}")
            rows[table] = con.execute(f"select count(*) from {table}").fetchone()[0]
        con.execute("commit")
    return rows


def refresh_serving(settings: Settings, tables: list[str] | None = None) -> dict[str, int]:
    """Copy ``tables`` (default: the whole serving slice) from the server target (Spark or PostgreSQL) into
    the serving store: after a PostgreSQL build, or a dbt run outside a build (member_features for a new
    date). A Spark build copies its slice itself, in its own process."""
    tables = tables or serving_tables()
    if spark_target():
        folder = spark.spark_dir(settings) / "serving"
        spark.serve(settings, tables, folder)
    else:
        folder = settings.home / "postgres" / "serving"
        write_serving(PgSettings.from_env(), tables, folder)
    return load_serving(settings, folder, tables)
