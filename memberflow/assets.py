"""Airflow Assets that chain the DAGs: one per landed table, the marts, the scores, the deliveries."""

from __future__ import annotations

from airflow.sdk import Asset

from memberflow.core.contracts import CONTRACTS, TableContract


def landed_asset(contract: TableContract) -> Asset:
    return Asset(
        name=f"landing.{contract.channel}.{contract.table}",
        uri=f"x-memberflow://landing/{contract.channel}/{contract.table}",
        group="landing",
    )


LANDED_ASSETS: tuple[Asset, ...] = tuple(landed_asset(c) for c in CONTRACTS)

# The member marts (dim_member, member_identifiers, member_tags, member_features, ...) after a good build.
WAREHOUSE_MEMBERS = Asset(name="warehouse.members", uri="x-memberflow://warehouse/members", group="warehouse")

# Today's member_scores (every model with a champion) after the scores quality gate passed.
MEMBER_SCORES = Asset(
    name="warehouse.member_scores", uri="x-memberflow://warehouse/member_scores", group="warehouse"
)

# Segment deliveries of a day (the plan passed its gate and the connectors ran; see the run's report).
SEGMENT_DELIVERIES = Asset(
    name="outreach.segment_deliveries", uri="x-memberflow://outreach/segment_deliveries", group="outreach"
)

# Airflow pools of the resources that take one writer at a time. On one machine memberflow's file locks
# already order the writers; pools keep them apart across Celery workers and keep waiting tasks out of the
# worker slots. Every deployment creates them from docker/airflow-pools.json (`airflow pools import`): a task
# in a pool that does not exist is never scheduled, without an error.
WAREHOUSE_POOL = "memberflow_warehouse"  # the DuckDB warehouse file
MLFLOW_POOL = "memberflow_mlflow"  # the workspace's SQLite MLflow store and registry
