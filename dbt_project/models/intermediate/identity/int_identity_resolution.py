"""Stable member ids: replays the identity graph in the order it was learned (memberflow.identity).

Besides identifier assignments and merges, full builds (no as-of date) compare with the assignment the
last successful build saved in the workspace ($MEMBERFLOW_HOME/identity/) and record splits: identifiers
that left a member without a merge explaining it, because evidence disappeared (a new block or cap).
"""


def model(dbt, session):
    dbt.config(materialized="table")
    from pathlib import Path

    import polars as pl

    from memberflow.identity import find_splits, resolve

    nodes = dbt.ref("int_identity_nodes").pl().select("id_type", "id_value", "first_seen_on")
    edges = (
        dbt.ref("int_identity_edges_checked")
        .filter("drop_reason is null")
        .pl()
        .select("id_type_a", "id_value_a", "id_type_b", "id_value_b", "first_seen_on")
    )
    # Staging already keeps only evidence landed on or before the as-of date, if one is set.
    resolution = resolve(nodes, edges)
    frames = [
        resolution.assignments.with_columns(record=pl.lit("assignment")),
        resolution.merges.with_columns(record=pl.lit("merge")),
    ]
    as_of = str(dbt.config.get("as_of_date") or "")
    snapshot = Path(str(dbt.config.get("workspace"))) / "identity"
    splits = [
        pl.DataFrame(schema={"member_id": pl.String, "split_from_member_id": pl.String, "split_on": pl.Date})
    ]
    if as_of in ("", "None") and nodes.height:
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
    return pl.concat(frames, how="diagonal").to_arrow()
