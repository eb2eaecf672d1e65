"""Stable member ids: replays the identity graph in the order it was learned (memberflow.identity).

Assignments, merges and, on full builds, splits against the snapshot the last successful build saved in
the workspace ($MEMBERFLOW_HOME/identity/): see ``memberflow.identity.resolution_records``. DuckDB only;
on PostgreSQL the same replay runs between two build phases (memberflow.postgres).
"""


def model(dbt, session):
    dbt.config(materialized="table")
    from pathlib import Path

    from memberflow.identity import resolution_records

    nodes = dbt.ref("int_identity_nodes").pl().select("id_type", "id_value", "first_seen_on")
    edges = (
        dbt.ref("int_identity_edges_checked")
        .filter("drop_reason is null")
        .pl()
        .select("id_type_a", "id_value_a", "id_type_b", "id_value_b", "first_seen_on")
    )
    as_of = str(dbt.config.get("as_of_date") or "")
    snapshot = Path(str(dbt.config.get("workspace"))) / "identity"
    return resolution_records(nodes, edges, snapshot, as_of).to_arrow()
