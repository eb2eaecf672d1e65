"""The benchmark harness: every stage of memberflow on one generated brand, beside raw baselines.

Run (one command; writes bench/results/<members>x<days>.json and re-renders bench/RESULTS.md):

    .venv/bin/python bench/harness.py --members 100000 --days 365 [--workdir DIR] [--resume] [--no-postgres]
        [--spark]

What it does, on data generated for --members people over --days days plus one more day:
  history: generate → extract (land every history day through the landing gate) → build (dbt, whole
           project) → quality (marts gate) → train (churn, repurchase, conversion)
  baselines on the same warehouse: identity (memberflow.identity.resolve vs scipy connected_components),
           features (member_features' SQL vs one hand-written DuckDB query of all its columns for the
           day, whose rows are checked against the model's), training (memberflow's fit, evaluation and
           registration vs a bare lightgbm.train on the same matrix), scoring (score vs a
           bare Booster.predict on the same population; reasons are timed apart, in deliver)
  the daily run of day --days + 1: extract that day → build → quality → score (three models) → deliver
           (segments, suppression, ledger, webhook / WeCom / SMS against the local sandbox APIs with a rate
           limit), and its delivery rate beside the sandbox's limit
  PostgreSQL: the full build and the next day's build on the dbt project's postgres target (landing load,
           two-phase build) beside DuckDB's; skipped with --no-postgres.
  Spark (--spark): the same two builds on local Spark, per step, and churn scored on Spark's executors,
           compared with the DuckDB scores of the day. Both server targets also time their serving copy
           (write the slice as Parquet, load it into a scratch DuckDB file).
  DAG files: parse time of each, as the DAG processor pays it.

Every stage runs in its own child process; the figures are that process's wall time, CPU time (user + system,
with its children, e.g. dbt) and peak RSS (the largest of it and its children), so stages do not share a
memory high-water mark. The machine (CPU, cores, memory, versions) is recorded with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from memberflow.core.vocab import CONSUMABLES  # noqa: E402  (after the path above)

KEY = "bench-harness-key"
START = date(2025, 1, 1)
RESULTS_DIR = REPO / "bench" / "results"
RESULTS_MD = REPO / "bench" / "RESULTS.md"
MODELS = ("churn", "repurchase", "conversion")  # the order the stages run them
# The local APIs' rate limit during the delivery stage: requests per second for each of webhook, WeCom, SMS.
SANDBOX_RPS = 50

# Goals from the performance issue, as printed beside each ratio.
GOALS = {
    "landing": "a year at 1M members in ≤ 10 min",
    "features": "≤ 2× the raw query",
    "identity": "≤ 10× scipy",
    "train_fit": "≤ 1.15× bare lightgbm.train",
    "score_model": "≤ 1.3× bare Booster.predict",
}

# The raw baseline: every one of member_features' columns for one as-of date, hand-written the way an
# analyst would query the warehouse for today only: orders in their current version (fct_orders: every
# version landed before the day after the newest landing), one pass per source table, aggregated by member.
# The harness checks that it returns the model's rows and values before it reports the ratio.
CATEGORIES = CONSUMABLES
_BY_CATEGORY = ",\n".join(
    f"""    count(*) filter (where category = '{c}') as orders_{c},
    coalesce(sum(line_amount_cny) filter (where category = '{c}'), 0) as spend_{c},
    $as_of - max(order_date) filter (where category = '{c}') as days_since_{c}"""
    for c in CATEGORIES
)
_CATEGORY_COLUMNS = ",\n".join(
    f"    coalesce(orders_{c}, 0) as orders_{c}, coalesce(spend_{c}, 0)::decimal(14, 2) as spend_{c},"
    f" days_since_{c}::bigint as days_since_{c}"
    for c in CATEGORIES
)
_DUE_COLUMNS = ",\n".join(
    f"    (select replenishment_days from category_catalog where category = '{c}') - days_since_{c}"
    f" as days_until_due_{c}"
    for c in CATEGORIES
)
RAW_FEATURES = f"""
with
members as (
    select member_id, acquisition_channel, first_seen_on from dim_member where first_seen_on < $as_of
),
orders as (
    select member_id, order_key, order_date, net_amount_cny from fct_orders
    where member_id is not null and is_purchase and order_date < $as_of
),
by_member as (
    select member_id,
        count(distinct order_date) as purchase_days,
        count(*) as orders_total,
        sum(net_amount_cny) as spend_total,
        count(*) filter (where order_date >= $as_of - 90) as orders_90d,
        coalesce(sum(net_amount_cny) filter (where order_date >= $as_of - 90), 0) as spend_90d,
        $as_of - max(order_date) as days_since_last_order,
        $as_of - min(order_date) as days_since_first_order
    from orders group by member_id
),
gaps as (
    select member_id,
        avg(gap) as gap_mean, stddev_samp(gap) as gap_std, arg_max(gap, order_date) as gap_last
    from (
        select member_id, order_date,
            order_date - lag(order_date) over (partition by member_id order by order_date) as gap
        from (select distinct member_id, order_date from orders)
    )
    where gap is not null group by member_id
),
by_category as (
    select member_id,
{_BY_CATEGORY},
    min(order_date) filter (where category = 'infant_formula') as first_infant_formula_on
    from (
        select member_id, order_key, order_date, category, sum(line_amount_cny) as line_amount_cny
        from orders join int_order_lines using (order_key)
        group by member_id, order_key, order_date, category
    )
    group by member_id
),
activity as (
    select member_id,
        count(*) filter (where checkins > 0 and activity_date >= $as_of - 7) as checkin_days_7d,
        count(*) filter (where checkins > 0 and activity_date between $as_of - 28 and $as_of - 8)
            as checkin_days_prev_21d,
        coalesce(sum(livestream_minutes) filter (where activity_date >= $as_of - 30), 0) as live_minutes_30d,
        coalesce(sum(livestream_minutes) filter (where activity_date between $as_of - 60 and $as_of - 31), 0)
            as live_minutes_prev_30d,
        coalesce(sum(livestream_sessions) filter (where activity_date >= $as_of - 30), 0)
            as live_sessions_30d,
        coalesce(sum(mp_visits) filter (where activity_date >= $as_of - 30), 0) as mp_visits_30d,
        coalesce(sum(mp_events) filter (where activity_date >= $as_of - 30), 0) as mp_events_30d,
        coalesce(sum(article_views) filter (where activity_date >= $as_of - 30), 0) as article_views_30d,
        coalesce(sum(group_messages) filter (where activity_date >= $as_of - 30), 0) as group_messages_30d,
        max(activity_date) as last_activity
    from fct_member_daily_engagement where activity_date < $as_of
    group by member_id
),
streaks as (
    -- the run of consecutive check-in days that ends yesterday
    select member_id, $as_of - min(activity_date) as checkin_streak
    from (
        select member_id, activity_date,
            activity_date - cast(row_number() over (partition by member_id order by activity_date) as integer)
                as run
        from fct_member_daily_engagement where checkins > 0 and activity_date < $as_of
    )
    group by member_id, run
    having max(activity_date) = $as_of - 1
),
channels as (
    select member_id, count(distinct channel) as channels_used
    from (select member_id, unnest(channels) as channel from member_identifiers where first_seen_on < $as_of)
    group by member_id
),
tags as (
    select member_id,
        max(tag_value) filter (where tag_group = 'lifecycle') as lifecycle_stage,
        max(tag_value) filter (where tag_group = 'funnel_stage') as funnel_stage,
        max(tag_value) filter (where tag_group = 'value_tier') as value_tier
    from member_tags
    where tag_group in ('lifecycle', 'funnel_stage', 'value_tier')
        and valid_from <= $as_of - 1 and (valid_to is null or valid_to > $as_of - 1)
    group by member_id
),
consent as (
    select i.member_id,
        bool_or(not c.granted) filter (where c.scope = 'marketing') as marketing_opt_out,
        first(c.granted order by c.event_time desc, c.granted) filter (where c.scope = 'health_data')
            as health_data_consent
    from stg_consent__events c join member_identifiers i using (id_type, id_value)
    where c.event_date < $as_of
    group by i.member_id
)
select
    member_id,
    $as_of as as_of_date,
    ($as_of - first_seen_on)::bigint as tenure_days,
    acquisition_channel,
    coalesce(channels_used, 0) as channels_used,
    coalesce(orders_total, 0)::bigint as orders_total,
    coalesce(orders_90d, 0)::bigint as orders_90d,
    coalesce(spend_total, 0)::decimal(14, 2) as spend_total,
    coalesce(spend_90d, 0)::decimal(14, 2) as spend_90d,
    days_since_last_order::bigint as days_since_last_order,
    days_since_first_order::bigint as days_since_first_order,
    coalesce(purchase_days, 0)::bigint as purchase_days,
    case when gap_mean > 0 then days_since_last_order / gap_mean end::double as purchase_overdue_ratio,
    (spend_total / orders_total)::double as avg_order_value,
    gap_mean::double as purchase_gap_mean,
    gap_std::double as purchase_gap_std,
    gap_last::bigint as purchase_gap_last,
{_CATEGORY_COLUMNS},
{_DUE_COLUMNS},
    floor(($as_of - first_infant_formula_on) / 30.44)::integer as baby_age_months,
    coalesce(checkin_days_7d, 0) as checkin_days_7d,
    coalesce(checkin_days_prev_21d, 0) as checkin_days_prev_21d,
    coalesce(checkin_days_7d, 0) / 7.0 as checkin_rate_7d,
    coalesce(checkin_days_prev_21d, 0) / 21.0 as checkin_rate_prev_21d,
    coalesce(checkin_days_7d, 0) / 7.0 - coalesce(checkin_days_prev_21d, 0) / 21.0 as checkin_rate_change,
    coalesce(checkin_streak, 0)::bigint as checkin_streak,
    coalesce(live_minutes_30d, 0) as live_minutes_30d,
    coalesce(live_minutes_prev_30d, 0) as live_minutes_prev_30d,
    coalesce(live_minutes_30d, 0) - coalesce(live_minutes_prev_30d, 0) as live_minutes_trend,
    coalesce(live_sessions_30d, 0)::bigint as live_sessions_30d,
    coalesce(mp_visits_30d, 0)::bigint as mp_visits_30d,
    coalesce(mp_events_30d, 0)::bigint as mp_events_30d,
    coalesce(article_views_30d, 0)::bigint as article_views_30d,
    coalesce(group_messages_30d, 0)::bigint as group_messages_30d,
    ($as_of - greatest(last_activity, first_seen_on))::bigint as days_since_last_activity,
    lifecycle_stage,
    funnel_stage,
    value_tier,
    coalesce(marketing_opt_out, false) as marketing_opt_out,
    coalesce(health_data_consent, false) as health_data_consent
from members
left join by_member using (member_id)
left join gaps using (member_id)
left join by_category using (member_id)
left join activity using (member_id)
left join streaks using (member_id)
left join channels using (member_id)
left join tags using (member_id)
left join consent using (member_id)
"""


# ---------------------------------------------------------------------------------------------- stages
# Each stage runs in a child process (``--stage NAME``) and returns a dict of figures of its own
# (rows, inner timings); the parent adds wall, CPU and peak RSS from the child's rusage.


def _settings(workdir: Path):
    from memberflow.core.settings import Settings, apply_privacy_defaults

    apply_privacy_defaults()
    return Settings.from_env(
        {
            "MEMBERFLOW_HOME": str(workdir / "ws"),
            "MEMBERFLOW_DATA_DIR": str(workdir / "data"),
            "MEMBERFLOW_ID_KEY": KEY,
            "MEMBERFLOW_ML_THREADS": "1",
            # a backfill's landing processes (the history extract), as set for the run
            "MEMBERFLOW_LANDING_WORKERS": os.environ.get("MEMBERFLOW_LANDING_WORKERS", "1"),
        }
    )


def _history(args) -> list[date]:
    return [START + timedelta(days=i) for i in range(args.days)]


def _new_day(args) -> date:
    return START + timedelta(days=args.days)


def stage_generate(args, settings) -> dict:
    from devkit.generate import GenerateConfig, generate

    summary = generate(
        GenerateConfig(args.members, START, args.days + 1, 1, settings.data_dir), settings.id_key()
    )
    return {"rows": sum(summary.rows.values())}


def _land(settings, days) -> dict:
    from memberflow.pipeline import land_days

    run = land_days(settings, days)
    # A partition over its quarantine limit is refused, as in production (small samples can trip the 5 %
    # limit by chance): counted and named in the results, not fatal to the benchmark.
    return {
        "rows": sum(r.read for r in run.reports),
        "quarantined": sum(r.quarantined for r in run.reports),
        "partitions": len(run.reports),
        "refused": sorted(run.errors),
    }


def stage_extract(args, settings) -> dict:
    return {**_land(settings, _history(args)), "landing_workers": settings.landing_workers}


def stage_extract_raw(args, settings) -> dict:
    """The floor under landing: every history source file read with pyarrow (CSV, JSON lines, Parquet) and
    written as Parquet, in one process: no contract, checks, phone tokens, quarantine or gate."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    history = {day.isoformat() for day in _history(args)}
    skip_bad_rows = pacsv.ParseOptions(invalid_row_handler=lambda _: "skip")  # the sample's planted dirt
    out = args.workdir / "raw_landing"
    rows = files = 0
    for path in sorted(settings.data_dir.glob("*/*/dt=*/*")):
        if path.parent.name.removeprefix("dt=") not in history:
            continue
        if path.stat().st_size == 0:
            continue
        if path.suffix == ".csv":
            try:
                table = pacsv.read_csv(path, parse_options=skip_bad_rows)
            except pa.ArrowInvalid:  # a bad row pyarrow cannot show its handler (not UTF-8): replace bytes
                text = path.read_bytes().decode("utf-8", "replace").encode()
                table = pacsv.read_csv(io.BytesIO(text), parse_options=skip_bad_rows)
        elif path.suffix == ".jsonl":
            try:
                table = pajson.read_json(path)
            except pa.ArrowInvalid:  # a malformed line: read the file again without it
                good = [line for line in path.read_bytes().splitlines() if _parses(line)]
                if not good:
                    continue
                table = pajson.read_json(io.BytesIO(b"\n".join(good)))
        elif path.suffix == ".parquet":
            table = pq.read_table(path)
        else:
            continue
        target = out / path.relative_to(settings.data_dir).with_suffix(".parquet")
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target)
        rows, files = rows + table.num_rows, files + 1
    return {"rows": rows, "files": files}


def _parses(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _warehouse_rows(settings) -> dict:
    import duckdb

    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        members = con.sql("select count(*) from dim_member").fetchall()[0][0]
        orders = con.sql("select count(*) from fct_orders").fetchall()[0][0]
        events = con.sql("select count(*) from fct_member_daily_engagement").fetchall()[0][0]
    return {"members": members, "orders": orders, "engagement_rows": events}


def _landed_rows(settings) -> int:
    import duckdb

    files = [str(p) for p in settings.landing_dir.rglob("*.parquet")]
    if not files:
        return 0
    with duckdb.connect() as con:  # one scan of the footers (a query per file cost ~2 s for 4,380 files)
        return con.sql("select count(*) from read_parquet($files)", params={"files": files}).fetchall()[0][0]


def _slowest_dbt_nodes(settings, top: int = 8) -> dict[str, float]:
    from memberflow.dbt_env import dbt_environment

    results = Path(dbt_environment(settings)["DBT_TARGET_PATH"]) / "run_results.json"
    nodes = json.loads(results.read_text())["results"]
    ranked = sorted(nodes, key=lambda n: n.get("execution_time") or 0, reverse=True)[:top]
    return {n["unique_id"].split(".", 2)[-1]: round(n["execution_time"], 2) for n in ranked}


def stage_build(args, settings) -> dict:
    from memberflow.transform import build_warehouse

    result = build_warehouse(settings)
    if result.failures:
        raise SystemExit(f"dbt build failed: {result.failures}")
    return {
        "rows": _landed_rows(settings),
        **_warehouse_rows(settings),
        "slowest": _slowest_dbt_nodes(settings),
    }


PG_DATABASE = "memberflow_bench"


def stage_build_pg(args, settings) -> dict:
    """The same build on PostgreSQL (the local server): the landing load, then the two-phase dbt build.

    Runs after the DuckDB build of the same day and before the marts gate (a build clears the marts'
    published marker, which the gate sets again). A full build starts from a fresh database; the daily
    one loads only the day's partitions into it."""
    os.environ["MEMBERFLOW_DBT_TARGET"] = "postgres"
    os.environ["MEMBERFLOW_PG_DATABASE"] = PG_DATABASE
    from memberflow.core.settings import PgSettings
    from memberflow.postgres import drop_database, load_landing, write_serving
    from memberflow.transform import build_warehouse

    pg = PgSettings.from_env()
    if args.model == "full":
        drop_database(pg)
    began = time.perf_counter()
    loaded = load_landing(settings, pg)
    load_s = time.perf_counter() - began
    began = time.perf_counter()
    # its own load finds nothing new; the serving store keeps DuckDB's build (the copy is timed apart)
    result = build_warehouse(settings, snapshot=False, serve=False)
    build_s = time.perf_counter() - began
    return {
        "rows": loaded.rows,
        "load_s": load_s,
        "partitions_copied": loaded.copied,
        "build_s": build_s,
        "nodes": result.succeeded,
        **_serving_copy(settings, lambda tables, folder: write_serving(pg, tables, folder)),
    }


def _serving_copy(settings, write) -> dict:
    """Time writing the serving slice from the target (Parquet) and loading it with ``load_serving`` into a
    scratch workspace's DuckDB file (the workspace's own keeps DuckDB's build, which later stages use)."""
    import dataclasses

    from memberflow.serving import load_serving, serving_tables

    tables, folder = serving_tables(), settings.home / "bench_serving"
    began = time.perf_counter()
    write(tables, folder)
    written = time.perf_counter() - began
    scratch = dataclasses.replace(settings, home=settings.home / "bench_serving_store")
    shutil.rmtree(scratch.home, ignore_errors=True)
    began = time.perf_counter()
    load_serving(scratch, folder, tables)
    loaded = time.perf_counter() - began
    size = sum(f.stat().st_size for f in folder.rglob("*.parquet"))
    shutil.rmtree(scratch.home)
    return {"serving_write_s": written, "serving_load_s": loaded, "serving_mib": size / 2**20}


SPARK_SCHEMA = "memberflow_bench"


def _spark_env() -> None:
    os.environ["MEMBERFLOW_DBT_TARGET"] = "spark"
    os.environ["MEMBERFLOW_SPARK_SCHEMA"] = SPARK_SCHEMA


def stage_build_spark(args, settings) -> dict:
    """The same build on local Spark (memberflow.spark): sources over the landed Parquet, both dbt phases and
    the identity replay in one child process, per step; then the serving copy, timed apart. A full build
    starts from an empty Spark warehouse and metastore."""
    _spark_env()
    from memberflow import spark
    from memberflow.transform import build_warehouse

    if args.model == "full":
        shutil.rmtree(spark.spark_dir(settings), ignore_errors=True)
    began = time.perf_counter()
    result = build_warehouse(settings, snapshot=False, serve=False)
    return {
        "build_s": time.perf_counter() - began,
        "nodes": result.succeeded,
        "steps_s": result.seconds,
        **_serving_copy(settings, lambda tables, folder: spark.serve(settings, tables, folder)),
    }


def stage_score_spark(args, settings) -> dict:
    """The champion scores the model's population on Spark's executors; compared with what the DuckDB
    scoring stage stored for the same day (the largest probability difference, deciles that differ)."""
    _spark_env()
    import polars as pl

    from memberflow.warehouse import read_warehouse
    from ml.registry import CHAMPION, NoChampionError, load
    from ml.spark_score import score_on_spark

    day = _next_day(settings)
    try:
        loaded = load(settings, args.model, CHAMPION)
    except NoChampionError as exc:
        return {"rows": 0, "note": str(exc)}
    began = time.perf_counter()
    scored, ran = score_on_spark(
        settings, args.model, day, loaded.booster, loaded.features, loaded.calibration
    )
    wall = time.perf_counter() - began
    with read_warehouse(settings) as con:
        single = con.sql(
            "select member_id, probability, decile from member_scores where model = ? and as_of = ?",
            params=[args.model, day],
        ).pl()
    both = pl.from_arrow(scored).join(single, on="member_id", how="full", suffix="_single")
    return {
        "rows": scored.num_rows,
        "score_s": wall,
        "partitions": ran["partitions"],
        "single_machine_rows": single.height,
        "max_abs_difference": float((both["probability"] - both["probability_single"]).abs().max()),
        "deciles_differing": int((both["decile"] != both["decile_single"]).sum()),
    }


def stage_quality(args, settings) -> dict:
    from expectations.marts import gate_warehouse
    from memberflow.transform import latest_landed_day

    result = gate_warehouse(settings, latest_landed_day(settings))
    return {"rows": _warehouse_rows(settings)["members"], "suites": len(getattr(result, "suites", []) or [])}


def _graph(settings):
    import duckdb

    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        nodes = con.sql("select id_type, id_value, first_seen_on from int_identity_nodes").pl()
        edges = con.sql(
            "select id_type_a, id_value_a, id_type_b, id_value_b, first_seen_on "
            "from int_identity_edges_checked where drop_reason is null"
        ).pl()
    return nodes, edges


def stage_identity(args, settings) -> dict:
    from memberflow.identity import resolve

    nodes, edges = _graph(settings)
    began = time.perf_counter()
    resolution = resolve(nodes, edges)
    return {
        "rows": nodes.height + edges.height,
        "timed_s": time.perf_counter() - began,
        "members": resolution.assignments["member_id"].n_unique(),
    }


def stage_identity_scipy(args, settings) -> dict:
    import numpy as np
    import polars as pl
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    nodes, edges = _graph(settings)
    began = time.perf_counter()
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
    ends = [
        edges.select(key=pl.concat_str(f"id_type_{s}", pl.lit("|"), f"id_value_{s}")).join(
            keys, on="key", how="left"
        )["i"]
        for s in ("a", "b")
    ]
    n = keys.height
    graph = coo_matrix((np.ones(edges.height), (ends[0].to_numpy(), ends[1].to_numpy())), shape=(n, n))
    count = connected_components(graph, directed=False)[0]
    return {
        "rows": nodes.height + edges.height,
        "timed_s": time.perf_counter() - began,
        "members": int(count),
    }


def _next_day(settings) -> date:
    """The as-of date of features and scores: the day after the newest landed data."""
    from memberflow.transform import latest_landed_day

    return latest_landed_day(settings) + timedelta(days=1)


def stage_features(args, settings) -> dict:
    """member_features for one as-of date, as the daily run computes it: the dbt model (with dbt's start-up)
    and its compiled SQL alone."""
    import duckdb

    from memberflow.dbt_env import dated_target_path
    from memberflow.transform import run_dbt

    day = _next_day(settings)
    began = time.perf_counter()
    result = run_dbt(settings, ["run", "--select", "int_feature_dates", "member_features"], None, [day])
    with_dbt = time.perf_counter() - began
    if result.failures:
        raise SystemExit(f"dbt run member_features failed: {result.failures}")
    compiled = next((dated_target_path(settings) / "compiled").rglob("member_features.sql")).read_text()
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        began = time.perf_counter()
        rows = con.sql(compiled).to_arrow_table().num_rows
        alone = time.perf_counter() - began
    return {"rows": rows, "timed_s": alone, "with_dbt_s": with_dbt, "as_of": str(day)}


def stage_features_raw(args, settings) -> dict:
    import duckdb

    day = _next_day(settings)
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        began = time.perf_counter()
        raw = con.sql(RAW_FEATURES, params={"as_of": day}).to_arrow_table()
        timed = time.perf_counter() - began
        model = con.sql("select * from member_features where as_of_date = $d", params={"d": day})
        check = _same_features(raw, model.to_arrow_table())
    return {"rows": raw.num_rows, "timed_s": timed, "columns": raw.num_columns, **check}


def _same_features(raw, model) -> dict:
    """How the raw query's rows differ from the model's for the same date: members on one side only, and per
    column the members whose values differ (numbers compared to 1e-9 relative)."""
    import polars as pl

    ours, theirs = pl.from_arrow(model), pl.from_arrow(raw)
    joined = ours.join(theirs, on="member_id", how="inner", suffix="__raw")
    differs = {}
    for column in ours.columns:
        if column == "member_id":
            continue
        if column not in theirs.columns:
            differs[column] = "missing"
            continue
        a, b = pl.col(column), pl.col(f"{column}__raw")
        if ours.schema[column].is_numeric():
            a, b = a.cast(pl.Float64), b.cast(pl.Float64)
            same = ((a - b).abs() <= 1e-9 * pl.max_horizontal(a.abs(), b.abs(), pl.lit(1.0))) | (
                a.is_null() & b.is_null()
            )
        else:
            same = a.eq_missing(b)
        bad = joined.select((~same.fill_null(False)).sum()).item()
        if bad:
            differs[column] = bad
    return {
        "model_rows": ours.height,
        "only_model": ours.height - joined.height,
        "only_raw": theirs.height - joined.height,
        "differs": differs,
    }


def _training_set(settings, model: str):
    from ml.config import model_spec
    from ml.datasets import build_training_set

    spec = model_spec(model)
    return spec, build_training_set(settings, spec, None, None)


def stage_train(args, settings) -> dict:
    """memberflow's training of one model: the training set (features at each cutoff), then the fit with
    early stopping and calibration, evaluation beside the baselines, plots, MLflow logging and registration
    (timed_s: the part a bare lightgbm.train replaces)."""
    import matplotlib.pyplot  # noqa: F401  (a running worker has these loaded; not counted)
    import mlflow.lightgbm  # noqa: F401

    from ml.registry import experiment_id
    from ml.train import evaluate, fit, register

    model = args.model
    experiment_id(settings, model)
    began = time.perf_counter()
    spec, ts = _training_set(settings, model)
    dataset_s = time.perf_counter() - began
    began = time.perf_counter()
    fitted, test = fit(ts, spec, 1)
    fit_s = time.perf_counter() - began
    evaluation = evaluate(ts, fitted, test)
    evaluate_s = time.perf_counter() - began - fit_s
    result = register(settings, evaluation)
    return {
        "rows": len(ts.frame),
        "dataset_s": dataset_s,
        "timed_s": time.perf_counter() - began,
        "fit_s": fit_s,
        "evaluate_s": evaluate_s,
        "register_s": time.perf_counter() - began - fit_s - evaluate_s,
        "trees": fitted.best_iteration,
        "promoted": bool(result.decision.promote),
    }


def stage_train_bare(args, settings) -> dict:
    import lightgbm as lgb

    from ml.train import lightgbm_params, split_holdout

    spec, ts = _training_set(settings, args.model)
    features = ts.features
    train_x, train_y = ts.train_matrix()
    tune, _ = split_holdout(ts.holdout_frame)
    params = lightgbm_params(spec, features, len(train_x), 1)
    # categorical features declared as memberflow's fit declares them
    categorical = [c for c in ts.manifest["categorical"] if c in features]
    began = time.perf_counter()
    dtrain = lgb.Dataset(train_x, label=train_y, categorical_feature=categorical)
    del train_x, train_y
    dtune = lgb.Dataset(
        tune[features], label=tune["label"], categorical_feature=categorical, reference=dtrain
    )
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=spec.num_boost_round,
        valid_sets=[dtune],
        callbacks=[lgb.early_stopping(spec.early_stopping_rounds, first_metric_only=True, verbose=False)],
    )
    return {"rows": len(ts.frame), "timed_s": time.perf_counter() - began, "trees": booster.best_iteration}


def stage_score(args, settings) -> dict:
    """Score one model's population with the champion (features, predict,
    calibration, deciles, write member_scores); timed_s: the scoring after the features are read."""
    from ml import score as score_module

    day = _next_day(settings)
    inner = {}
    original = score_module.score_frame

    def timed_score_frame(*a, **k):
        began = time.perf_counter()
        table = original(*a, **k)
        inner["timed_s"] = time.perf_counter() - began
        return table

    score_module.score_frame = timed_score_frame
    from ml.registry import NoChampionError

    try:
        result = score_module.score(settings, args.model, day)
    except NoChampionError as exc:  # the model was not promoted: nothing to score, said in the results
        return {"rows": 0, "note": str(exc), "as_of": str(day)}
    return {"rows": result.rows, **inner, "as_of": str(day)}


def stage_scores_gate(args, settings) -> dict:
    from expectations.marts import gate_warehouse

    day = _next_day(settings)
    gate_warehouse(settings, day, gate="scores")
    return {"as_of": str(day)}


def stage_score_bare(args, settings) -> dict:
    from memberflow.warehouse import read_warehouse
    from ml.datasets import population_frame
    from ml.registry import CHAMPION, load

    day = _next_day(settings)
    loaded = load(settings, args.model, CHAMPION)
    with read_warehouse(settings) as con:
        frame = population_frame(con, args.model, [day])
    X = frame[loaded.features]
    began = time.perf_counter()
    # LightGBM's own threads, as many as scoring's slices (MEMBERFLOW_PREDICT_THREADS)
    loaded.booster.predict(X, num_threads=settings.predict_threads)
    return {"rows": len(frame), "timed_s": time.perf_counter() - began}


def stage_extract_day(args, settings) -> dict:
    return _land(settings, [_new_day(args)])


def stage_deliver(args, settings) -> dict:
    """Segments (plan, memberships, segments gate) and delivery of day --days + 1 through every connector,
    against the local sandbox APIs limited to SANDBOX_RPS requests per second each."""
    from devkit.sandbox import SandboxConfig, SandboxServer
    from expectations.marts import gate_warehouse
    from memberflow.outreach import run as run_module
    from memberflow.outreach.run import deliver, plan, write_memberships
    from memberflow.outreach.suppression import CHINA

    explained = {"explain_s": 0.0, "explained": 0}
    original = run_module.explain

    def timed_explain(*a, **k):  # the reasons of the segment members, computed while planning
        began = time.perf_counter()
        counts = original(*a, **k)
        explained["explain_s"] += time.perf_counter() - began
        explained["explained"] += sum(counts.values())
        return counts

    run_module.explain = timed_explain  # where the planner looks it up (imported from ml.score)
    day = _next_day(settings)
    limits = {"webhook": SANDBOX_RPS, "wecom": SANDBOX_RPS, "sms": SANDBOX_RPS}
    sandbox = SandboxServer(SandboxConfig(limits=limits, window_seconds=1.0))
    sandbox.start()
    try:
        os.environ.update(sandbox.env())
        # both on the delivery day's clock: planned on today's, every send of a past day is stale (and
        # nobody is explained until delivery plans again)
        now = datetime(day.year, day.month, day.day, 10, 0, tzinfo=CHINA)
        began = time.perf_counter()
        write_memberships(settings, plan(settings, day, now))
        gate_warehouse(settings, day, gate="segments")
        planned_s = time.perf_counter() - began
        began = time.perf_counter()
        report = deliver(settings, day, now=now)
        sent_s = time.perf_counter() - began
        summary = report.to_dict()
        seen = sandbox.state.snapshot()
    finally:
        sandbox.stop()
    return {
        "rows": summary.get("sent", 0),
        "plan_s": planned_s,
        **explained,
        "timed_s": sent_s,
        "report": {k: v for k, v in summary.items() if isinstance(v, int | dict) and k != "segments"},
        "requests": seen["requests"],
        "rejected": seen["rejected"],
        "duplicates": seen["duplicates"],
    }


def stage_dag_parse(args, settings) -> dict:
    from bench.dag_parse import DAGS, PROBE

    figures = {}
    with __import__("tempfile").TemporaryDirectory() as home:
        env = {**os.environ, "AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
        for path in sorted(DAGS.glob("*.py")):
            runs = []
            for _ in range(3):
                out = subprocess.run(
                    [sys.executable, "-c", PROBE, str(path)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.strip()
                runs.append(json.loads(out.splitlines()[-1])["seconds"])
            figures[path.name] = sorted(runs)[1]
    return {"files": figures, "timed_s": max(figures.values())}


STAGES = {name[len("stage_") :]: fn for name, fn in globals().items() if name.startswith("stage_")}


# ---------------------------------------------------------------------------------------------- parent


class ProcessTree:
    """Samples a stage's process and all its descendants every 0.2 s: the largest total RSS seen at once, and
    the CPU time of every process seen (its last reading)."""

    def __init__(self, pid: int) -> None:
        import threading

        import psutil

        self.root = psutil.Process(pid)
        self.peak_rss, self._cpu, self._done = 0, {}, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        import psutil

        while not self._done.wait(0.2):
            total = 0
            with contextlib.suppress(psutil.Error):
                for proc in [self.root, *self.root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += proc.memory_info().rss
                        times = proc.cpu_times()
                        self._cpu[proc.pid] = times.user + times.system
            self.peak_rss = max(self.peak_rss, total)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    @property
    def cpu_s(self) -> float:
        return sum(self._cpu.values())


def run_stage(args, name: str, label: str | None = None, model: str | None = None) -> dict:
    """Run one stage in a child process; its figures plus wall, CPU and peak RSS from its rusage."""
    cmd = [sys.executable, __file__, "--stage", name, "--workdir", str(args.workdir)]
    cmd += ["--members", str(args.members), "--days", str(args.days)]
    if model:
        cmd += ["--model", model]
    label = label or name
    print(f"{label:<28} ...", end="", flush=True)
    began = time.perf_counter()
    logs = args.workdir / "logs"
    logs.mkdir(exist_ok=True)
    log = logs / f"{len(list(logs.iterdir())):02d}-{label.replace(' ', '_').replace(':', '')}.log"
    with open(log, "w") as stderr:
        child = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}
        )
        tree = ProcessTree(child.pid)
        out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    tree.stop()
    wall = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"\nstage {label} failed (exit {os.waitstatus_to_exitcode(status)}); see {log}")
    figures = json.loads(out.strip().splitlines()[-1])
    figures.update(
        stage=label,
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mib=usage.ru_maxrss / 1024,  # the child's, or its largest descendant's (dbt)
        # the whole tree at once, sampled: what the stage holds (Spark: the JVM and its Python workers,
        # which the child's rusage does not see)
        tree_peak_rss_mib=tree.peak_rss / 2**20,
        tree_cpu_s=max(tree.cpu_s, usage.ru_utime + usage.ru_stime),
    )
    rows = figures.get("rows")
    print(
        f"\r{label:<28} {wall:8.1f} s wall {figures['tree_cpu_s']:8.1f} s CPU "
        f"{figures['tree_peak_rss_mib']:8,.0f} MiB"
        + (f"  {rows:>12,} rows" if isinstance(rows, int) else ""),
        flush=True,
    )
    return figures


def machine() -> dict:
    cpu = "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    versions = {}
    for package in (
        "duckdb",
        "dbt-core",
        "dbt-duckdb",
        "polars",
        "lightgbm",
        "mlflow",
        "great-expectations",
        "apache-airflow",
        "astronomer-cosmos",
        "scipy",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    return {
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": mem_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "when": datetime.now().astimezone().isoformat(timespec="minutes"),
    }


def run_all(args) -> dict:
    print(f"{args.members:,} members x {args.days} days (+1 daily run) in {args.workdir}")
    # Figures of the stages done so far are kept in the workdir: --resume carries on after the last one
    # (a stage is only meaningful after the ones before it, so a resumed run repeats none and skips none).
    partial = args.workdir / "stages.json"
    done = json.loads(partial.read_text()) if args.resume and partial.exists() else []
    stages: list[dict] = []

    def s(run) -> None:
        stages.append(run)
        partial.write_text(json.dumps(stages, indent=1))

    def run_stage_once(name: str, label: str | None = None, model: str | None = None) -> dict:
        if len(stages) < len(done):
            kept = done[len(stages)]
            assert kept["stage"] == (label or name), (kept["stage"], label or name)
            print(f"{kept['stage']:<28} (kept from the earlier run)")
            return kept
        return run_stage(args, name, label, model)

    s(run_stage_once("generate"))
    s(run_stage_once("extract", "extract (history)"))
    s(run_stage_once("extract_raw", "extract baseline (pyarrow)"))
    s(run_stage_once("build", "build (full)"))
    if args.postgres:
        s(run_stage_once("build_pg", "postgres: full build", "full"))
    if args.spark:
        s(run_stage_once("build_spark", "spark: full build", "full"))
    s(run_stage_once("quality", "quality (marts gate)"))
    s(run_stage_once("identity"))
    s(run_stage_once("identity_scipy", "identity baseline (scipy)"))
    s(run_stage_once("features"))
    s(run_stage_once("features_raw", "features baseline (SQL)"))
    for model in MODELS:
        s(run_stage_once("train", f"train {model}", model))
    s(run_stage_once("train_bare", "train baseline (churn)", "churn"))
    # the daily run of the day after the history
    s(run_stage_once("extract_day", "daily: extract"))
    s(run_stage_once("build", "daily: build"))
    if args.postgres:
        s(run_stage_once("build_pg", "postgres: daily build", "daily"))
    if args.spark:
        s(run_stage_once("build_spark", "spark: daily build", "daily"))
    s(run_stage_once("quality", "daily: quality"))
    for model in MODELS:
        s(run_stage_once("score", f"daily: score {model}", model))
    if args.spark:
        s(run_stage_once("score_spark", "spark: score churn", "churn"))
    s(run_stage_once("scores_gate", "daily: scores gate"))
    s(run_stage_once("score_bare", "score baseline (churn)", "churn"))
    s(run_stage_once("deliver", "daily: deliver"))
    s(run_stage_once("dag_parse", "DAG files parse"))
    return {"members": args.members, "days": args.days, "machine": machine(), "stages": stages}


# ---------------------------------------------------------------------------------------------- report


def _by(result: dict) -> dict:
    return {st["stage"]: st for st in result["stages"]}


def ratios(result: dict) -> list[tuple[str, float, float, float, str]]:
    """(what, ours, baseline, ratio, goal) for each stage with a raw baseline."""
    st = _by(result)
    out = []

    def add(what, ours, base, goal):
        if ours is not None and base:
            out.append((what, ours, base, ours / base, goal))

    if "extract baseline (pyarrow)" in st:  # runs before 2026-12-06 had no raw landing baseline
        add(
            "landing the history: extract + gate + publish / pyarrow read + write",
            st["extract (history)"]["wall_s"],
            st["extract baseline (pyarrow)"]["wall_s"],
            GOALS["landing"],
        )
    add(
        "identity: resolve / scipy",
        st["identity"]["timed_s"],
        st["identity baseline (scipy)"]["timed_s"],
        GOALS["identity"],
    )
    # Runs before 2026-11-27 had a raw query of 7 of the 72 features (no "columns" in their figures).
    partial = "" if "columns" in st["features baseline (SQL)"] else " (raw query of 7 of the 72 features)"
    add(
        "features: model SQL / raw query" + partial,
        st["features"]["timed_s"],
        st["features baseline (SQL)"]["timed_s"],
        GOALS["features"],
    )
    add(
        "features: dbt run / raw query" + partial,
        st["features"]["with_dbt_s"],
        st["features baseline (SQL)"]["timed_s"],
        "(with dbt start-up)",
    )
    add(
        "training: fit+evaluate+register / bare train (churn)",
        st["train churn"]["timed_s"],
        st["train baseline (churn)"]["timed_s"],
        GOALS["train_fit"],
    )
    add(
        "training: fit (early stopping + calibration) / bare train (churn)",
        st["train churn"].get("fit_s"),
        st["train baseline (churn)"]["timed_s"],
        "",
    )
    add(
        "scoring: score / bare predict (churn)",
        st["daily: score churn"].get("timed_s"),
        st["score baseline (churn)"]["timed_s"],
        GOALS["score_model"],
    )
    add(
        "daily build / full build",
        st["daily: build"]["wall_s"],
        st["build (full)"]["wall_s"],
        "in proportion to the day's data",
    )
    return out


def daily(result: dict) -> tuple[float, float]:
    parts = [st for st in result["stages"] if st["stage"].startswith("daily: ")]
    return sum(p["wall_s"] for p in parts), max(_peak(p) for p in parts)


def _peak(stage: dict) -> float:
    """Peak RSS of the stage: its whole process tree at once (runs before 2026-12-06: the largest single
    process, which missed Spark's JVM)."""
    return stage.get("tree_peak_rss_mib", stage["peak_rss_mib"])


def _cpu(stage: dict) -> float:
    return stage.get("tree_cpu_s", stage["cpu_s"])


def render(results: list[dict]) -> str:
    lines = [
        "# Benchmark results",
        "",
        "Written by `bench/harness.py` (do not edit by hand; rerun it). Each stage ran in its own process:",
        "wall time, CPU time (user + system, its children included) and peak RSS (since 2026-12-06 the",
        "whole process tree sampled every 0.2 s, so Spark's JVM and Python workers count; before, the",
        "process or its largest child, e.g. dbt). Baselines ran on the same data in the same run.",
        "",
        "Reproduce: `.venv/bin/python bench/harness.py --members 100000 --days 365` (the 1M run: "
        "`--members 1000000 --days 365 --no-postgres`, about 75 minutes; Spark beside DuckDB: "
        "`--members 100000 --days 90 --no-postgres --spark`, about 20 minutes).",
        "",
    ]
    for result in sorted(results, key=lambda r: (r["members"], r["days"])):
        m = result["machine"]
        total, peak = daily(result)
        lines += [
            f"## {result['members']:,} members × {result['days']} days",
            "",
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB; {m['os']}; "
            f"Python {m['python']}; "
            + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
            + f". Run {m['when']}.",
            "",
            f"**Daily run (day {result['days'] + 1}: extract → build → quality → score ×3 → deliver): "
            f"{total:,.0f} s wall ({total / 60:.1f} min), peak {peak:,.0f} MiB** "
            "(goal at 1M members: < 15 min, < 8 GB).",
            "",
            "| stage | wall s | CPU s | peak RSS MiB | rows | rows/s |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for st in result["stages"]:
            rows = st.get("rows")
            counted = isinstance(rows, int)
            per_s = f"{rows / st['wall_s']:,.0f}" if counted and rows else ""
            lines.append(
                f"| {st['stage']} | {st['wall_s']:,.1f} | {_cpu(st):,.1f} | {_peak(st):,.0f} | "
                f"{f'{rows:,}' if counted else ''} | {per_s} |"
            )
        lines += [
            "",
            "| compared (timed part only) | ours s | baseline s | ratio | goal |",
            "|---|---:|---:|---:|---|",
        ]
        for what, ours, base, ratio, goal in ratios(result):
            lines.append(f"| {what} | {ours:,.2f} | {base:,.2f} | {ratio:,.2f}× | {goal} |")
        st = _by(result)
        refused = st.get("extract (history)", {}).get("refused") or []
        if refused:
            tables = sorted({r.split(" ")[0] for r in refused})
            days = sorted({r.split(" ")[1] for r in refused})
            lines += [
                "",
                f"The landing gate refused {len(refused)} history partitions ({', '.join(tables)}; "
                f"{days[0]} to {days[-1]}), so the warehouse was built without them. The generated brand's "
                "first weeks are far from its steady state (existing members arrive in the first week, "
                "engagement ramps up after). The volume check (0.6×–2.5× the 14-day median) refuses such "
                "days once a table has 28 earlier partitions and only warns before; runs made before that "
                "warm-up rule (2026-11-27) were refused from the second week.",
            ]
        raw = st.get("features baseline (SQL)", {})
        if "differs" in raw:
            agrees = not (raw["differs"] or raw["only_model"] or raw["only_raw"])
            lines += [
                "",
                f"Features baseline: one hand-written query for the as-of date, {raw['columns']} columns "
                f"(member_features' {raw['columns'] - 2} features with member_id and as_of_date); "
                + (
                    f"checked against the model's rows: the same {raw['model_rows']:,} members and values."
                    if agrees
                    else f"checked against the model's {raw['model_rows']:,} rows: {raw['only_model']} only "
                    f"in the model, {raw['only_raw']} only in the query, members differing per column: "
                    f"{raw['differs']}."
                ),
            ]
        deliver = st.get("daily: deliver", {})
        if deliver:
            secs = deliver.get("timed_s") or 0
            sent = deliver.get("rows") or 0
            lines += [
                "",
                f"Delivery: {sent:,} messages sent in {secs:,.1f} s "
                f"({sent / secs if secs else 0:,.0f}/s) against "
                f"sandbox APIs limited to {SANDBOX_RPS} requests/s each; report: "
                + ", ".join(f"{k}={v}" for k, v in (deliver.get("report") or {}).items()),
            ]
            if "explained" in deliver:
                lines.append(
                    f"\nReasons (TreeSHAP, `pred_contrib`) for the segment members, computed while "
                    f"planning: {deliver['explained']:,} member-model pairs in "
                    f"{deliver['explain_s']:,.1f} s; "
                    f"planning with the segments gate {deliver['plan_s']:,.1f} s."
                )
        for label in ("train churn", "train repurchase", "train conversion"):
            t = st.get(label, {})
            if "fit_s" in t:
                lines.append(
                    f"\n{label}: training set {t['dataset_s']:,.1f} s, fit {t['fit_s']:,.1f} s "
                    f"({t['trees']} trees), evaluation {t['evaluate_s']:,.1f} s, "
                    f"MLflow logging + registry {t['register_s']:,.1f} s; "
                    f"promoted: {t['promoted']}."
                )
        pg_full, pg_daily = st.get("postgres: full build"), st.get("postgres: daily build")
        if pg_full and pg_daily:
            lines.append(
                f"\nPostgreSQL target (local server): full build {pg_full['wall_s']:,.0f} s "
                f"(loading {pg_full['partitions_copied']:,} partitions, {pg_full['rows']:,} rows: "
                f"{pg_full['load_s']:,.0f} s; dbt in two phases with the identity replay between: "
                f"{pg_full['build_s']:,.0f} s) against DuckDB's {st['build (full)']['wall_s']:,.0f} s; "
                f"the next day {pg_daily['wall_s']:,.0f} s (loading {pg_daily['partitions_copied']} "
                f"partitions: {pg_daily['load_s']:,.1f} s; dbt {pg_daily['build_s']:,.0f} s)."
            )
        for target in ("postgres", "spark"):
            full, day = st.get(f"{target}: full build", {}), st.get(f"{target}: daily build", {})
            if "serving_write_s" in full and "serving_write_s" in day:
                lines.append(
                    f"\n{target} serving copy (the slice written as Parquet, then loaded into DuckDB): "
                    f"after the full build {full['serving_write_s']:,.0f} + {full['serving_load_s']:,.0f} s "
                    f"({full['serving_mib']:,.0f} MiB), after the daily build "
                    f"{day['serving_write_s']:,.0f} + {day['serving_load_s']:,.0f} s."
                )
        sp_full, sp_daily = st.get("spark: full build"), st.get("spark: daily build")
        if sp_full and sp_daily:
            lines.append(
                f"\nSpark target (local mode, {m['cores']} cores, one machine): full build "
                f"{sp_full['build_s']:,.0f} s ("
                + ", ".join(f"{k} {v:,.0f}" for k, v in sp_full["steps_s"].items())
                + f") against DuckDB's {st['build (full)']['wall_s']:,.0f} s, peak RSS "
                f"{_peak(sp_full):,.0f} MiB (the JVM and its Python workers included) against "
                f"{_peak(st['build (full)']):,.0f}; the next day {sp_daily['build_s']:,.0f} s ("
                + ", ".join(f"{k} {v:,.0f}" for k, v in sp_daily["steps_s"].items())
                + f") against {st['daily: build']['wall_s']:,.0f} s."
            )
        sp_score = st.get("spark: score churn", {})
        if sp_score.get("rows"):
            lines.append(
                f"\nchurn scored on Spark: {sp_score['rows']:,} members in {sp_score['score_s']:,.0f} s "
                f"({sp_score['partitions']} tasks) against {st['daily: score churn']['wall_s']:,.0f} s "
                f"in one process; largest probability difference {sp_score['max_abs_difference']:.1e}, "
                f"{sp_score['deciles_differing']} deciles differing."
            )
        for label in ("build (full)", "daily: build"):
            slowest = st.get(label, {}).get("slowest")
            if slowest:
                lines.append(
                    f"\n{label}, slowest dbt nodes (s): "
                    + ", ".join(f"{k} {v:,.1f}" for k, v in slowest.items())
                )
        if deliver:
            lines.append(
                f"\nDelivery API requests: {deliver.get('requests')}; refused by the limit or faults: "
                f"{deliver.get('rejected') or 'none'}; "
                f"duplicates at the receiver: {deliver.get('duplicates')}."
            )
        parse = st.get("DAG files parse", {}).get("files", {})
        if parse:
            lines += [
                "",
                "DAG file parse (median of 3, fresh interpreter, `import airflow` excluded; goal < 1 s): "
                + ", ".join(f"{k} {v * 1000:,.0f} ms" for k, v in parse.items()),
            ]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument(
        "--days", type=int, default=365, help="days of history; the daily run is the next day"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="default: a new folder under /tmp")
    parser.add_argument("--stage", choices=sorted(STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--model", default="churn", help=argparse.SUPPRESS)
    parser.add_argument(
        "--resume", action="store_true", help="carry on in --workdir after the last stage done"
    )
    parser.add_argument(
        "--no-postgres",
        dest="postgres",
        action="store_false",
        help="skip the PostgreSQL builds (they use MEMBERFLOW_PG_* and a database named memberflow_bench)",
    )
    parser.add_argument(
        "--spark",
        action="store_true",
        help="also build on local Spark (full and daily, schema memberflow_bench) and score churn there",
    )
    parser.add_argument("--render-only", action="store_true", help="re-render RESULTS.md from bench/results/")
    args = parser.parse_args()
    if args.stage:
        figures = STAGES[args.stage](args, _settings(args.workdir))
        print(json.dumps(figures, default=str))
        return
    if not args.render_only:
        import tempfile

        args.workdir = args.workdir or Path(tempfile.mkdtemp(prefix=f"memberflow-bench-{args.members}-"))
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = run_all(args)
        RESULTS_DIR.mkdir(exist_ok=True)
        (RESULTS_DIR / f"{args.members}x{args.days}.json").write_text(json.dumps(result, indent=1) + "\n")
        for what, _ours, _base, ratio, goal in ratios(result):
            print(f"{what:<56} {ratio:7.2f}×  ({goal})")
        total, peak = daily(result)
        print(f"daily run: {total:,.0f} s, peak {peak:,.0f} MiB")
    results = [json.loads(p.read_text()) for p in sorted(RESULTS_DIR.glob("*.json"))]
    RESULTS_MD.write_text(render(results))
    print(f"wrote {RESULTS_MD}")


if __name__ == "__main__":
    main()
