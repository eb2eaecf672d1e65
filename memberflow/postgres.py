"""PostgreSQL as the dbt target: load the landing zone into raw tables, replay identity, build in two phases.

On DuckDB the dbt project reads the landed Parquet directly and replays the identity graph in a Python
model. PostgreSQL can do neither, so with ``MEMBERFLOW_DBT_TARGET=postgres`` a build is:

1. ``load_landing``: every published partition (and the workspace reference tables) copied into the
   ``<schema>_raw`` schema, one table per landed table. Partitions are tracked by file fingerprint, so a
   daily load copies only new or re-landed partitions and removes withdrawn ones;
2. ``dbt build`` of the nodes the identity graph needs (staging, identity nodes and checked edges);
3. ``replay_identity``: the same replay as the DuckDB Python model (``memberflow.identity``), written to
   ``<schema>_raw.identity_replay``, which the Postgres variant of ``int_identity_resolution`` selects;
4. ``dbt build`` of everything else.

Connection settings come from the environment (the dbt profile reads the same variables): see
``PgSettings``.
"""

from __future__ import annotations

import io
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from memberflow.core.contracts import CONTRACTS
from memberflow.core.settings import PgSettings, Settings
from memberflow.extract import QUARANTINE_SCHEMA, file_fingerprint, landed_schema, partition_days, sql_type
from memberflow.identity import resolution_records

PHASE_ONE = ("+int_identity_nodes", "+int_identity_edges_checked")


def ensure_database(pg: PgSettings) -> None:
    """Create the target database when it does not exist (the server's ``postgres`` database is asked)."""
    con = pg.connect("postgres")
    try:
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute("select 1 from pg_database where datname = %s", (pg.database,))
            if cur.fetchone() is None:
                cur.execute(f'create database "{pg.database}"')
    finally:
        con.close()


def drop_database(pg: PgSettings) -> None:
    """Drop the target database, closing its sessions (tests and benchmarks start from a fresh one)."""
    con = pg.connect("postgres")
    try:
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(f'drop database if exists "{pg.database}" with (force)')
    finally:
        con.close()


def _create_table(cur, relation: str, schema: pa.Schema, extra: str = "") -> None:
    columns = ", ".join(f'"{f.name}" {sql_type(f.type, "postgres")}' for f in schema)
    cur.execute(f"create table if not exists {relation} ({columns}{extra})")


def _copy(cur, relation: str, table: pa.Table) -> None:
    """COPY an Arrow table in as CSV: nulls are unquoted empty fields, strings are always quoted."""
    if table.num_rows == 0:
        return
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer, pacsv.WriteOptions(include_header=True))
    buffer.seek(0)
    columns = ", ".join(f'"{name}"' for name in table.column_names)
    cur.copy_expert(f"copy {relation} ({columns}) from stdin with (format csv, header true)", buffer)


@dataclass
class LoadReport:
    copied: int = 0  # partitions copied (new or re-landed)
    removed: int = 0  # partitions withdrawn from the landing zone
    unchanged: int = 0
    rows: int = 0


def load_landing(settings: Settings, pg: PgSettings | None = None) -> LoadReport:
    """Bring ``<schema>_raw`` in line with the landing zone and the workspace reference tables."""
    pg = pg or PgSettings.from_env()
    ensure_database(pg)
    raw = pg.raw_schema
    report = LoadReport()
    con = pg.connect()
    try:
        with con, con.cursor() as cur:
            cur.execute(f"create schema if not exists {raw}")
            cur.execute(
                f"create table if not exists {raw}._partitions (relation text, dt date, fingerprint text, "
                "rows bigint, loaded_at timestamptz default now(), primary key (relation, dt))"
            )
        for contract in CONTRACTS:
            name = f"{contract.channel}__{contract.table}"
            relation = f"{raw}.{name}"
            schema = landed_schema(contract)
            partitions = partition_days(settings.landing_dir / contract.channel / contract.table)
            changed = 0
            with con, con.cursor() as cur:
                _create_table(cur, relation, schema, ', "_partition_dt" date')
                cur.execute(f"select dt, fingerprint from {raw}._partitions where relation = %s", (name,))
                known = dict(cur.fetchall())
            for day in sorted(set(known) - set(partitions)):
                with con, con.cursor() as cur:
                    cur.execute(f'delete from {relation} where "_partition_dt" = %s', (day,))
                    cur.execute(f"delete from {raw}._partitions where relation = %s and dt = %s", (name, day))
                report.removed += 1
                changed += 1
            for day, folder in partitions.items():
                part = folder / "part-0.parquet"
                fingerprint = file_fingerprint(part)
                if known.get(day) == fingerprint:
                    report.unchanged += 1
                    continue
                table = pq.read_table(part, schema=schema)
                table = table.append_column("_partition_dt", pa.array([day] * table.num_rows, pa.date32()))
                with con, con.cursor() as cur:  # one transaction: readers see the old partition or the new
                    cur.execute(f'delete from {relation} where "_partition_dt" = %s', (day,))
                    _copy(cur, relation, table)
                    cur.execute(
                        f"insert into {raw}._partitions (relation, dt, fingerprint, rows) "
                        "values (%s, %s, %s, %s) on conflict (relation, dt) do update set "
                        "fingerprint = excluded.fingerprint, rows = excluded.rows, loaded_at = now()",
                        (name, day, fingerprint, table.num_rows),
                    )
                report.copied += 1
                report.rows += table.num_rows
                changed += 1
            if changed:
                # fresh statistics: without them the planner takes a new table for a few rows and joins
                # it by nested loop (an identity-to-events join ran for minutes instead of a second)
                with con, con.cursor() as cur:
                    cur.execute(f"analyze {relation}")
        for path in sorted((settings.home / "reference").glob("*.parquet")):
            replace_table(pg, f"reference__{path.stem}", pq.read_table(path))
        replace_table(pg, "quarantine", quarantined_rows(settings))
    finally:
        con.close()
    return report


def quarantined_rows(settings: Settings) -> pa.Table:
    """Every quarantined landing row of the workspace (small: only the rows that broke a contract)."""
    parts = sorted(settings.quarantine_dir.glob("*/*/dt=*/part-0.parquet"))
    if not parts:
        return QUARANTINE_SCHEMA.empty_table()
    return pa.concat_tables(pq.read_table(part, schema=QUARANTINE_SCHEMA) for part in parts)


def replace_table(pg: PgSettings, name: str, table: pa.Table) -> None:
    """Replace ``<schema>_raw.<name>`` with the Arrow table, in one transaction."""
    relation = f"{pg.raw_schema}.{name}"
    con = pg.connect()
    try:
        with con, con.cursor() as cur:
            cur.execute(f"create schema if not exists {pg.raw_schema}")
            cur.execute(f"drop table if exists {relation}")
            _create_table(cur, relation, table.schema)
            _copy(cur, relation, table)
            cur.execute(f"analyze {relation}")
    finally:
        con.close()


def read_relation(pg: PgSettings, sql: str, schema: dict | None = None):
    """A query's result as a polars frame; ``schema`` (column -> polars type) types it, even when empty."""
    con = pg.connect()
    try:
        with con.cursor() as cur:
            cur.execute(sql)
            columns = [d.name for d in cur.description]
            rows = cur.fetchall()
    finally:
        con.close()
    if schema is not None:
        return pl.DataFrame(rows, schema=[(c, schema[c]) for c in columns], orient="row")
    return pl.DataFrame(rows, schema=columns, orient="row", infer_schema_length=None)


# PostgreSQL column types (information_schema.columns.data_type) as Arrow types, for the serving copy
_ARROW_OF_PG = {
    "boolean": pa.bool_(),
    "smallint": pa.int16(),
    "integer": pa.int32(),
    "bigint": pa.int64(),
    "real": pa.float32(),
    "double precision": pa.float64(),
    "text": pa.string(),
    "character varying": pa.string(),
    "character": pa.string(),
    "date": pa.date32(),
    "timestamp without time zone": pa.timestamp("us"),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
}


def _arrow_type(data_type: str, element: str | None, precision: int | None, scale: int | None) -> pa.DataType:
    if data_type == "numeric":  # unconstrained numerics (sums, ratios) have no fixed scale: doubles
        return pa.decimal128(precision, scale) if precision and scale is not None else pa.float64()
    if data_type == "ARRAY":
        return pa.list_(_ARROW_OF_PG.get(element or "text", pa.string()))
    return _ARROW_OF_PG.get(data_type, pa.string())


def write_serving(pg: PgSettings, tables: Sequence[str], folder: Path, batch_rows: int = 100_000) -> None:
    """Each table of the target schema as Parquet under ``folder/<table>/``, streamed in batches of
    ``batch_rows`` (memberflow.serving loads them into the serving store)."""
    shutil.rmtree(folder, ignore_errors=True)
    con = pg.connect()
    try:
        for table in tables:
            with con.cursor() as cur:
                cur.execute(
                    "select c.column_name, c.data_type, e.data_type, c.numeric_precision, c.numeric_scale "
                    "from information_schema.columns c left join information_schema.element_types e "
                    "on e.object_schema = c.table_schema and e.object_name = c.table_name "
                    "and e.object_type = 'TABLE' and e.collection_type_identifier = c.dtd_identifier "
                    "where c.table_schema = %s and c.table_name = %s order by c.ordinal_position",
                    (pg.schema, table),
                )
                columns = cur.fetchall()
            if not columns:
                raise LookupError(f"{pg.schema}.{table} does not exist in {pg.database}: build first")
            schema = pa.schema([(name, _arrow_type(*kinds)) for name, *kinds in columns])
            names = ", ".join(f'"{name}"' for name in schema.names)
            target = folder / table
            target.mkdir(parents=True)
            with con.cursor(name=f"serve_{table}") as cur:  # server side: batches, not the whole table
                cur.itersize = batch_rows
                cur.execute(f"select {names} from {pg.schema}.{table}")
                part = 0
                while True:
                    rows = cur.fetchmany(batch_rows)
                    if not rows and part:
                        break
                    values = list(zip(*rows, strict=True)) if rows else [[] for _ in schema]
                    arrays = [
                        pa.array(_plain(v, f.type), f.type) for v, f in zip(values, schema, strict=True)
                    ]
                    pq.write_table(
                        pa.Table.from_arrays(arrays, schema=schema), target / f"part-{part:05d}.parquet"
                    )
                    part += 1
                    if not rows:
                        break
    finally:
        con.close()


def _plain(values, arrow_type: pa.DataType) -> list:
    """Driver values Arrow takes as they are, except numerics read into a double column."""
    if pa.types.is_floating(arrow_type):
        return [None if v is None else float(v) for v in values]
    return list(values)


def replay_identity(settings: Settings, as_of_date: str | None, pg: PgSettings | None = None) -> int:
    """Replay the identity graph dbt built in Postgres and write ``<schema>_raw.identity_replay``."""
    pg = pg or PgSettings.from_env()
    nodes = read_relation(
        pg,
        f"select id_type, id_value, first_seen_on from {pg.schema}.int_identity_nodes",
        {"id_type": pl.String, "id_value": pl.String, "first_seen_on": pl.Date},
    )
    edges = read_relation(
        pg,
        "select id_type_a, id_value_a, id_type_b, id_value_b, first_seen_on "
        f"from {pg.schema}.int_identity_edges_checked where drop_reason is null",
        {
            **dict.fromkeys(("id_type_a", "id_value_a", "id_type_b", "id_value_b"), pl.String),
            "first_seen_on": pl.Date,
        },
    )
    records = resolution_records(nodes, edges, settings.home / "identity", as_of_date)
    replace_table(pg, "identity_replay", records.to_arrow())
    return records.height
