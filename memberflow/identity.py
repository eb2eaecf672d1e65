"""One ID: stable member ids from the identity graph (DESIGN §4).

The dbt project collects identifiers (nodes) and strong evidence between them (edges), each with the day it
was first seen, and drops blocked values and over-cap edges. This module turns that graph into members.

Algorithm: a union-find that replays the graph in the order it was learned. Each day, the identifiers
first seen that day join, then that day's edges are applied. A member's id is derived from its founding
identifier (the earliest seen, ties broken by key), so

* rebuilding from the same input gives the same ids (no state needed);
* when two members that both existed before day D are linked on day D, the older founder's id survives
  and the other id is recorded as retired, with the day; an identifier that is new on D simply joins;
* the graph as of a date is the same replay stopped at that date, so training never sees future merges;
* a later day never changes an earlier day's outcome, because evidence is dated by when it was landed.

Splits (an edge that existed before disappears, e.g. after a block or cap is added) are found by comparing
with the previous build's assignment: see ``find_splits``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import polars as pl

NODE_SEP = "|"


def node_key(id_type: str, id_value: str) -> str:
    return f"{id_type}{NODE_SEP}{id_value}"


def member_id_for(founder_key: str) -> str:
    """The member id founded by an identifier: 'm' + 16 hex digits of SHA-256 (64 bits)."""
    return "m" + hashlib.sha256(founder_key.encode("utf-8")).hexdigest()[:16]


def _member_ids_for(founder_keys: pl.DataFrame) -> pl.Series:
    """``member_id_for`` of each ``key``, in order: DuckDB's sha256 (the same digest of the same UTF-8
    bytes) over a million founders takes a fraction of the time of hashlib called a million times."""
    with duckdb.connect() as con:
        con.register("founders", founder_keys)
        return con.sql("select 'm' || left(sha256(key), 16) as member_id from founders").pl().to_series()


@dataclass
class Resolution:
    assignments: pl.DataFrame  # id_type, id_value, member_id, first_seen_on
    # retired_member_id, merged_into_member_id (survivor that day), member_id (today's survivor), merged_on
    merges: pl.DataFrame


def resolve(nodes: pl.DataFrame, edges: pl.DataFrame, as_of: date | None = None) -> Resolution:
    """Assign a stable member id to every identifier.

    ``nodes``: id_type, id_value, first_seen_on (one row per identifier).
    ``edges``: id_type_a, id_value_a, id_type_b, id_value_b, first_seen_on (strong edges only).
    Edge endpoints missing from ``nodes`` are added with the edge's date.
    """
    if as_of is not None:
        nodes = nodes.filter(pl.col("first_seen_on") <= as_of)
        edges = edges.filter(pl.col("first_seen_on") <= as_of)
    ends = [
        edges.select(id_type=f"id_type_{side}", id_value=f"id_value_{side}", first_seen_on="first_seen_on")
        for side in ("a", "b")
    ]
    # Founder order: earliest seen first, then the key "<id_type>|<id_value>" (no id type is a prefix of
    # another, so ordering by type then value is ordering by key). A node's rank is its row index.
    ranked = (
        pl.concat([nodes.select("id_type", "id_value", "first_seen_on"), *ends])
        .group_by("id_type", "id_value")
        .agg(pl.col("first_seen_on").min())
        .sort("first_seen_on", "id_type", "id_value")
        .with_row_index("rank")
    )
    ordered = (
        edges.join(
            ranked.select(id_type_a="id_type", id_value_a="id_value", a="rank"),
            on=["id_type_a", "id_value_a"],
        )
        .join(
            ranked.select(id_type_b="id_type", id_value_b="id_value", b="rank"),
            on=["id_type_b", "id_value_b"],
        )
        .sort("first_seen_on", "a", "b")
    )
    seen_day = ranked["first_seen_on"].cast(pl.Int32).to_list()
    # The replay is a plain Python loop over lists (faster than indexing numpy arrays one value at a time):
    # a root is always the lowest rank of its set, and every parent link points to a lower rank.
    parent = list(range(ranked.height))
    merged_retired: list[int] = []
    merged_survivor: list[int] = []
    merged_day: list[int] = []
    edge_days = ordered["first_seen_on"].cast(pl.Int32).to_list()
    for a, b, day in zip(ordered["a"].to_list(), ordered["b"].to_list(), edge_days, strict=True):
        while parent[a] != a:  # find, halving the path on the way
            parent[a] = a = parent[parent[a]]
        while parent[b] != b:
            parent[b] = b = parent[parent[b]]
        if a == b:
            continue
        survivor, retired = (a, b) if a < b else (b, a)
        parent[retired] = survivor
        # A member existed before this day only if its founder was seen earlier; a founder seen today was
        # never published, so joining it is growth, not a merge.
        if seen_day[retired] < day:
            merged_retired.append(retired)
            merged_survivor.append(survivor)
            merged_day.append(day)

    roots = np.asarray(parent, dtype=np.int64)
    while not np.array_equal(hops := roots[roots], roots):  # every node's root, by pointer jumping
        roots = hops
    founded = roots == np.arange(ranked.height)  # today's members' founders and the retired ones'
    founded[merged_retired + merged_survivor] = True
    founders = np.flatnonzero(founded)
    founder_ids = _member_ids_for(
        ranked[founders].select(key=pl.concat_str("id_type", pl.lit(NODE_SEP), "id_value"))
    )

    position = np.zeros(ranked.height, dtype=np.int64)
    position[founders] = np.arange(len(founders))

    def member_ids(ranks) -> pl.Series:  # the member id each founder rank founded
        return founder_ids.gather(position[np.asarray(ranks, dtype=np.int64)])

    assignments = ranked.select(
        "id_type", "id_value", member_id=member_ids(roots), first_seen_on="first_seen_on"
    )
    merges = pl.DataFrame(
        {
            "retired_member_id": member_ids(merged_retired),
            "merged_into_member_id": member_ids(merged_survivor),
            "member_id": member_ids(roots[merged_retired]),
            "merged_on": pl.Series(merged_day, dtype=pl.Int32).cast(pl.Date),
        },
        schema={
            "retired_member_id": pl.String,
            "merged_into_member_id": pl.String,
            "member_id": pl.String,
            "merged_on": pl.Date,
        },
    )
    return Resolution(assignments, merges)


def find_splits(
    previous: pl.DataFrame, current: pl.DataFrame, merges: pl.DataFrame, on: date
) -> pl.DataFrame:
    """Members that lost identifiers to another member since the previous build.

    An identifier moving from member A to member B is a merge when history retires A into B; otherwise A
    was split and B is the part that left (recorded as split_from A).
    """
    moved = (
        previous.select("id_type", "id_value", old="member_id")
        .join(current.select("id_type", "id_value", new="member_id"), on=["id_type", "id_value"])
        .filter(pl.col("old") != pl.col("new"))
        .join(merges.select(old="retired_member_id", merged=pl.lit(True)), on="old", how="left")
        .filter(pl.col("merged").is_null())
    )
    return (
        moved.select(member_id="new", split_from_member_id="old")
        .unique()
        .with_columns(split_on=pl.lit(on, dtype=pl.Date))
        .sort("split_from_member_id", "member_id")
    )


# Written by an id-key rotation (memberflow.keys): phone token under the current key -> the token the phone
# had when it was first tokenized.
ALIASES_FILE = "token_aliases.parquet"


def resolve_aliased(nodes: pl.DataFrame, edges: pl.DataFrame, aliases: Path) -> Resolution:
    """``resolve`` with phone tokens read as the tokens they had before any id-key rotation.

    A member's id comes from its founding identifier, and the replay orders identifiers by value: after a
    rotation re-tokenized every phone, replaying on the original tokens gives every member the id it had,
    and the assignments come back with the current tokens."""
    if not aliases.exists():
        return resolve(nodes, edges)
    table = pl.read_parquet(aliases)
    founding = dict(zip(table["current"].to_list(), table["founding"].to_list(), strict=True))
    current: dict[str, str] = {}

    def as_founded(frame: pl.DataFrame, type_col: str, value_col: str) -> pl.DataFrame:
        phones = frame.filter(pl.col(type_col) == "phone_token")[value_col].unique().to_list()
        current.update({founding.get(v, v): v for v in phones})
        return frame.with_columns(
            pl.when(pl.col(type_col) == "phone_token")
            .then(pl.col(value_col).replace(founding))
            .otherwise(pl.col(value_col))
            .alias(value_col)
        )

    nodes = as_founded(nodes, "id_type", "id_value")
    for side in ("a", "b"):
        edges = as_founded(edges, f"id_type_{side}", f"id_value_{side}")
    resolution = resolve(nodes, edges)
    assignments = resolution.assignments.with_columns(
        pl.when(pl.col("id_type") == "phone_token")
        .then(pl.col("id_value").replace(current))
        .otherwise(pl.col("id_value"))
        .alias("id_value")
    )
    return Resolution(assignments, resolution.merges)


def resolution_records(
    nodes: pl.DataFrame, edges: pl.DataFrame, snapshot: Path, as_of_date: str | None
) -> pl.DataFrame:
    """What ``int_identity_resolution`` holds: assignments, merges and splits, one ``record`` kind each.

    ``nodes``: id_type, id_value, first_seen_on; ``edges``: the kept edges. Full builds (no as-of date)
    compare with the assignment the last successful build saved under ``snapshot`` and record splits:
    identifiers that left a member without a merge explaining it (a new block or cap removed evidence).
    Both warehouse targets call this: DuckDB in a dbt Python model, PostgreSQL between its build phases.
    """
    # Staging already keeps only evidence landed on or before the as-of date, if one is set.
    resolution = resolve_aliased(nodes, edges, snapshot / ALIASES_FILE)
    frames = [
        resolution.assignments.with_columns(record=pl.lit("assignment")),
        resolution.merges.with_columns(record=pl.lit("merge")),
    ]
    splits = [
        pl.DataFrame(schema={"member_id": pl.String, "split_from_member_id": pl.String, "split_on": pl.Date})
    ]
    if as_of_date in (None, "", "None") and nodes.height:
        if (snapshot / "splits.parquet").exists():
            splits.append(pl.read_parquet(snapshot / "splits.parquet"))
        if (snapshot / "assignments.parquet").exists():
            previous = pl.read_parquet(snapshot / "assignments.parquet")
            today = nodes["first_seen_on"].max()
            splits.append(find_splits(previous, resolution.assignments, resolution.merges, today))
    recorded = pl.concat(splits).unique(
        ["member_id", "split_from_member_id"], keep="first", maintain_order=True
    )
    frames.append(recorded.with_columns(record=pl.lit("split")))
    return pl.concat(frames, how="diagonal")
