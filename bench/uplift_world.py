"""Benchmark: is the uplift report right? Weeks of daily deliveries into a world that reacts, scored against
the world's counterfactual truth.

Generates a sample (--members × --days), lands and builds it, trains the three models at weekly cutoffs,
then replays --deliver-days consecutive delivery days (score, plan, segments gate, deliver to local sandbox
receivers; devkit.replay) that end --window days before the sample's last day, so every outcome window
lands. The world (devkit.world) then writes what the sends caused, the warehouse is built again, and the
uplift report is compared with the truth, per segment and week:

- coverage: the share of segment-weeks whose 95 % interval holds the true uplift (all of them, and those
  with at least --big decisions);
- segments whose message has no effect: whether their intervals hold 0;
- bias: the mean of (estimate − truth) per segment.

    .venv/bin/python bench/uplift_world.py --members 30000 --days 100 --deliver-days 35 --out /tmp/uplift
    # the segments library by default; --segments FILE for another (e.g. bigger holdouts)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polars as pl

from devkit.generate import GenerateConfig, generate
from devkit.replay import days_between, replay
from devkit.world import EFFECTS, World
from expectations.marts import gate_warehouse
from memberflow.core.settings import Settings, apply_privacy_defaults
from memberflow.core.vocab import MODELS
from memberflow.outreach.outcomes import outcomes_report, units
from memberflow.pipeline import land_pending
from memberflow.segments import load_segments
from memberflow.transform import build_warehouse, latest_landed_day
from memberflow.warehouse import read_warehouse
from ml.train import train

ID_KEY = "memberflow-bench-id-key"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=30000)
    parser.add_argument("--days", type=int, default=100, help="days of generated history")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2026, 1, 1))
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--deliver-days", type=int, default=35, help="consecutive delivery days replayed")
    parser.add_argument("--window", type=int, default=14, help="the longest outcome window, in days")
    parser.add_argument("--big", type=int, default=1000, help="decisions a segment-week needs to be 'big'")
    parser.add_argument("--segments", type=Path, help="a segments library (default: memberflow's own)")
    parser.add_argument("--out", type=Path, required=True, help="working folder (data and workspace)")
    parser.add_argument("--json", type=Path, help="write the per segment-week comparison here")
    args = parser.parse_args()
    apply_privacy_defaults()
    if args.segments:
        os.environ["MEMBERFLOW_SEGMENTS"] = str(args.segments.resolve())
    data, home = args.out / "data", args.out / "ws"
    env = {
        "MEMBERFLOW_HOME": str(home),
        "MEMBERFLOW_ID_KEY": ID_KEY,
        "MEMBERFLOW_DATA_DIR": str(data),
        "MEMBERFLOW_SECRETS_DIR": str(args.out / "secrets"),
    }
    os.environ.update(env)
    settings = Settings.from_env(env)
    stages: dict[str, float] = {}

    def stage(name: str, began: float) -> None:
        stages[name] = round(time.perf_counter() - began, 1)
        print(f"{name}: {stages[name]} s", flush=True)

    t = time.perf_counter()
    if not (data / "_truth" / "config.json").exists():
        generate(GenerateConfig(args.members, args.start, args.days, args.seed, data), ID_KEY.encode())
    stage("generate", t)
    t = time.perf_counter()
    run = land_pending(settings, data)
    if not run.ok:
        raise SystemExit(f"landing failed: {run.errors}")
    build_warehouse(settings)
    last = latest_landed_day(settings)
    gate_warehouse(settings, last)
    stage("land and build", t)

    first_delivery = last - timedelta(days=args.window + args.deliver_days - 1)
    t = time.perf_counter()
    horizon = 14
    held_out = first_delivery - timedelta(days=horizon)  # its labels end where deliveries begin
    cutoffs = [held_out - timedelta(days=horizon + 7 * k) for k in (2, 1, 0)] + [held_out]
    for model in MODELS:
        train(settings, model, cutoffs, horizon)
    stage("train", t)

    t = time.perf_counter()
    days = days_between(first_delivery, first_delivery + timedelta(days=args.deliver_days - 1))
    results = replay(
        settings,
        days,
        retry_runs=False,
        on_day=lambda r: print(
            f"{r.day}: {r.sent} sent, gate {'ok' if r.gate_ok else r.gate_failures}", flush=True
        ),
    )
    stage("replay", t)
    t = time.perf_counter()
    world = World(data)
    reacted = world.react(settings)
    print(f"the world reacted: {reacted}")
    run = land_pending(settings, data)
    if not run.ok:
        raise SystemExit(f"landing the reactions failed: {run.errors}")
    build_warehouse(settings)
    stage("react and rebuild", t)

    t = time.perf_counter()
    rows = outcomes_report(settings, last)
    with read_warehouse(settings) as con:
        compared = units(con, last)
    truth = world.true_outcomes(settings, compared)
    stage("report and truth", t)
    true = {
        (r["segment"], r["week"].isoformat()): r
        for r in truth.group_by("segment", "week")
        .agg((pl.col("y1").cast(pl.Float64) - pl.col("y0").cast(pl.Float64)).mean().alias("true_uplift"))
        .to_dicts()
    }
    message = {s.name: s.message for s in load_segments()}
    table = []
    for r in rows:
        if r.uplift is None:
            continue
        truth_value = true[(r.segment, r.week)]["true_uplift"]
        table.append(
            {
                "segment": r.segment,
                "week": r.week,
                "decisions": r.treated + r.holdout,
                "treated": r.treated,
                "holdout": r.holdout,
                "estimate": round(r.uplift, 4),
                "ci": [round(r.ci_low, 4), round(r.ci_high, 4)],
                "truth": round(truth_value, 4),
                "covered": r.ci_low <= truth_value <= r.ci_high,
                "no_effect": EFFECTS.get(message.get(r.segment, ""), EFFECTS["winback_content"]).persuadable
                == 0,
            }
        )
    for row in table:
        print(json.dumps(row))
    big = [x for x in table if x["decisions"] >= args.big]
    null = [x for x in table if x["no_effect"]]
    summary = {
        "members": args.members,
        "delivery_days": len(days),
        "sent": sum(r.sent for r in results),
        "segment_weeks": len(table),
        "covered": sum(x["covered"] for x in table),
        "big_segment_weeks": len(big),
        "big_covered": sum(x["covered"] for x in big),
        "no_effect_segment_weeks": len(null),
        "no_effect_holding_0": sum(x["ci"][0] <= 0 <= x["ci"][1] for x in null),
        "bias_by_segment": {
            s: round(sum(x["estimate"] - x["truth"] for x in table if x["segment"] == s) / n, 4)
            for s, n in pl.DataFrame(table).group_by("segment").len().iter_rows()
        }
        if table
        else {},
        "seconds": stages,
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "segment_weeks": table}, indent=1))


if __name__ == "__main__":
    main()
