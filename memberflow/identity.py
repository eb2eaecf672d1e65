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

import numpy as np
import polars as pl

NODE_SEP = "|"


def node_key(id_type: str, id_value: str) -> str:
    return f"{id_type}{NODE_SEP}{id_value}"


def member_id_for(founder_key: str) -> str:
    """The member id founded by an identifier: 'm' + 16 hex digits of SHA-256 (64 bits)."""
    return "m" + hashlib.sha256(founder_key.encode("utf-8")).hexdigest()[:16]


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
    keyed_nodes = nodes.select(
        key=pl.concat_str("id_type", pl.lit(NODE_SEP), "id_value"), first_seen_on="first_seen_on"
    )
    keyed_edges = edges.select(
        a=pl.concat_str("id_type_a", pl.lit(NODE_SEP), "id_value_a"),
        b=pl.concat_str("id_type_b", pl.lit(NODE_SEP), "id_value_b"),
        first_seen_on="first_seen_on",
    )
    all_nodes = (
        pl.concat(
            [
                keyed_nodes,
                keyed_edges.select(key="a", first_seen_on="first_seen_on"),
                keyed_edges.select(key="b", first_seen_on="first_seen_on"),
            ]
        )
        .group_by("key")
        .agg(pl.col("first_seen_on").min())
        # Founder order: earliest seen first, then key; a node's rank is its index.
        .sort("first_seen_on", "key")
    )
    keys = all_nodes["key"].to_list()
    seen_day = all_nodes["first_seen_on"].cast(pl.Int32).to_numpy()
    index = {k: i for i, k in enumerate(keys)}
    ordered = keyed_edges.sort("first_seen_on", "a", "b")
    a_idx = np.fromiter((index[k] for k in ordered["a"].to_list()), dtype=np.int64, count=ordered.height)
    b_idx = np.fromiter((index[k] for k in ordered["b"].to_list()), dtype=np.int64, count=ordered.height)
    e_day = ordered["first_seen_on"].cast(pl.Int32).to_numpy()

    parent = np.arange(len(keys), dtype=np.int64)  # a root is always the lowest rank of its set

    def find(x: int) -> int:
        root = x
        while parent[root] != root:
            root = parent[root]
        while parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    merged_retired: list[int] = []
    merged_survivor: list[int] = []
    merged_day: list[int] = []
    for a, b, day in zip(a_idx.tolist(), b_idx.tolist(), e_day.tolist(), strict=True):
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        survivor, retired = (ra, rb) if ra < rb else (rb, ra)
        parent[retired] = survivor
        # A member existed before this day only if its founder was seen earlier; a founder seen today was
        # never published, so joining it is growth, not a merge.
        if seen_day[retired] < day:
            merged_retired.append(retired)
            merged_survivor.append(survivor)
            merged_day.append(day)

    roots = np.fromiter((find(i) for i in range(len(keys))), dtype=np.int64, count=len(keys))
    founder_ids = [member_id_for(k) for k in keys]
    member_ids = [founder_ids[r] for r in roots.tolist()]
    id_type, id_value = zip(*(k.split(NODE_SEP, 1) for k in keys), strict=True) if keys else ((), ())
    assignments = pl.DataFrame(
        {
            "id_type": list(id_type),
            "id_value": list(id_value),
            "member_id": member_ids,
            "first_seen_on": all_nodes["first_seen_on"],
        },
        schema={
            "id_type": pl.String,
            "id_value": pl.String,
            "member_id": pl.String,
            "first_seen_on": pl.Date,
        },
    )
    merges = pl.DataFrame(
        {
            "retired_member_id": [founder_ids[r] for r in merged_retired],
            "merged_into_member_id": [founder_ids[s] for s in merged_survivor],
            "member_id": [founder_ids[roots[r]] for r in merged_retired],
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
