"""Stable member ids: replays the identity graph in the order it was learned (memberflow.identity)."""


def model(dbt, session):
    dbt.config(materialized="table")
    import polars as pl

    from memberflow.identity import resolve

    nodes = dbt.ref("int_identity_nodes").pl().select("id_type", "id_value", "first_seen_on")
    edges = (
        dbt.ref("int_identity_edges_checked")
        .filter("drop_reason is null")
        .pl()
        .select("id_type_a", "id_value_a", "id_type_b", "id_value_b", "first_seen_on")
    )
    # Staging already keeps only evidence landed on or before the as-of date, if one is set.
    resolution = resolve(nodes, edges)
    assignments = resolution.assignments.with_columns(record=pl.lit("assignment"))
    merges = resolution.merges.with_columns(record=pl.lit("merge"))
    return pl.concat([assignments, merges], how="diagonal").to_arrow()
