"""The warehouse build at scale, with its identity and feature steps beside raw baselines.

Run: .venv/bin/python bench/build_scale.py --members 1000000 --days 365 [--workdir DIR]

Steps, each with wall time and peak memory (RSS of this process, or of the dbt child process):
  generate → extract every partition → dbt build (whole project);
  identity: memberflow.identity.resolve on the warehouse's nodes and kept edges, beside scipy's
            connected_components on the same edge list;
  features: dbt building member_features alone, beside one hand-written DuckDB query computing its
            order and engagement features.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from memberflow.config import Settings
from memberflow.generate import GenerateConfig, generate
from memberflow.identity import resolve
from memberflow.land import land_pending
from memberflow.transform import build_warehouse, run_dbt

RAW_FEATURES = """
with cutoff as (select max(activity_date) + 1 as as_of_date from fct_member_daily_engagement),
orders as (
    select member_id, order_date, net_amount_cny from fct_orders where member_id is not null and is_purchase
),
lines as (
    select o.member_id, o.order_date, o.order_key, i.category, i.line_amount_cny
    from fct_orders o
    join (
        select 'ecommerce:' || order_key as order_key, category, line_amount_cny
        from stg_ecommerce__order_items
        union all
        select 'store_pos:' || order_key, category, line_amount_cny from stg_store_pos__order_items
    ) i
      using (order_key)
    where o.member_id is not null and o.is_purchase
)
select m.member_id,
    count(o.order_date) as orders_total,
    sum(o.net_amount_cny) as spend_total,
    count(o.order_date) filter (where o.order_date >= c.as_of_date - 90) as orders_90d,
    c.as_of_date - max(o.order_date) as days_since_last_order,
    (select count(*) filter (where e.checkins > 0 and e.activity_date >= c.as_of_date - 7)
       from fct_member_daily_engagement e where e.member_id = m.member_id) as checkin_days_7d,
    (select sum(e.livestream_minutes) filter (where e.activity_date >= c.as_of_date - 30)
       from fct_member_daily_engagement e where e.member_id = m.member_id) as live_minutes_30d,
    (select list(distinct l.category) from lines l where l.member_id = m.member_id) as categories
from dim_member m cross join cutoff c
left join orders o on o.member_id = m.member_id and o.order_date < c.as_of_date
group by m.member_id, c.as_of_date
"""


def peak_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def timed(label: str, fn, who: int = resource.RUSAGE_SELF):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"{label:<44} {wall:8.1f} s wall {cpu:8.1f} s CPU   peak RSS {peak_mb(who):8,.0f} MiB", flush=True)
    return result, wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="memberflow-bench-"))
    settings = Settings.from_env(
        {
            "MEMBERFLOW_HOME": str(root / "ws"),
            "MEMBERFLOW_DATA_DIR": str(root / "data"),
            "MEMBERFLOW_ID_KEY": "b",
        }
    )
    start = date(2025, 1, 1)
    print(f"{args.members:,} members x {args.days} days in {root}")
    if not (root / "data" / "_truth").exists():
        timed(
            "generate",
            lambda: generate(
                GenerateConfig(args.members, start, args.days, 1, root / "data"), settings.id_key()
            ),
        )

    def land() -> int:
        run = land_pending(settings, root / "data")
        assert run.ok, run.errors
        return len(run.reports)

    timed("land all partitions (extract + landing gate + publish)", land)
    _, build_wall = timed(
        "dbt build (all models and tests)", lambda: build_warehouse(settings), resource.RUSAGE_CHILDREN
    )

    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        nodes = con.sql("select id_type, id_value, first_seen_on from int_identity_nodes").pl()
        edges = con.sql(
            "select id_type_a, id_value_a, id_type_b, id_value_b, first_seen_on "
            "from int_identity_edges_checked where drop_reason is null"
        ).pl()
    print(f"identity graph: {nodes.height:,} identifiers, {edges.height:,} kept strong edges")
    _, ours = timed("identity: memberflow.identity.resolve", lambda: resolve(nodes, edges))

    def scipy_components() -> int:
        keys = (
            pl.concat(
                [
                    nodes.select(key=pl.concat_str("id_type", pl.lit("|"), "id_value")),
                    edges.select(key=pl.concat_str("id_type_a", pl.lit("|"), "id_value_a")),
                    edges.select(key=pl.concat_str("id_type_b", pl.lit("|"), "id_value_b")),
                ]
            )
            .unique()
            .with_row_index("i")
        )
        a = edges.select(key=pl.concat_str("id_type_a", pl.lit("|"), "id_value_a")).join(
            keys, on="key", how="left"
        )
        b = edges.select(key=pl.concat_str("id_type_b", pl.lit("|"), "id_value_b")).join(
            keys, on="key", how="left"
        )
        n = keys.height
        graph = coo_matrix((np.ones(edges.height), (a["i"].to_numpy(), b["i"].to_numpy())), shape=(n, n))
        return connected_components(graph, directed=False)[0]

    _, baseline = timed("identity baseline: scipy connected_components", scipy_components)
    print(f"identity ratio (ours / scipy): {ours / baseline:.1f}x")

    _, dbt_features = timed(
        "features: dbt run member_features",
        lambda: run_dbt(settings, ["run", "--select", "member_features"]),
        resource.RUSAGE_CHILDREN,
    )
    compiled_dir = (
        settings.home / "dbt" / "target" / "compiled" / "memberflow" / "models" / "marts" / "member"
    )
    compiled = (compiled_dir / "member_features.sql").read_text()
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        _, model_sql = timed(
            "features: member_features SQL alone", lambda: con.sql(compiled).to_arrow_table()
        )
        _, raw = timed("features baseline: one DuckDB query", lambda: con.sql(RAW_FEATURES).to_arrow_table())
    print(
        f"feature ratio, model SQL / raw query (raw computes a subset): {model_sql / raw:.1f}x; "
        f"with dbt start-up: {dbt_features / raw:.1f}x"
    )
    print(f"build wall time {build_wall:.0f} s; last day {start + timedelta(days=args.days - 1)}")


if __name__ == "__main__":
    main()
