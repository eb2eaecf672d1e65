"""Benchmark: does ranking a segment by its uplift model reach more persuadable members than its propensity
ranking? Scored against the world's counterfactual truth.

Reads a workspace left by ``bench/uplift_world.py`` (weeks of deliveries with holdouts into a world that
reacts, built again after the reactions). Per segment with enough history, the uplift model is fitted and
backtested exactly as ``memberflow models uplift`` does (``memberflow.outreach.uplift.backtest``: the older
weeks train, the newest two are the backtest). On those newest weeks, each ranking's top fraction of the
decisions is "sent", and the world's truth (``devkit.world.World.true_outcomes``: both potential outcomes of
every decision) counts the responses the sends caused: true incremental responses per 1,000 sends, for the
uplift ranking, the segment's own rank_by (propensity) and random order. The promotion rule sees only
treated and held-out outcomes, never the truth; the table says whether it chose right.

    .venv/bin/python bench/uplift_world.py --members 30000 --days 100 --deliver-days 35 \\
        --segments /tmp/seg50.yml --out /tmp/up50     # holdout 0.5 in every segment
    .venv/bin/python bench/uplift_targeting.py --out /tmp/up50 --segments /tmp/seg50.yml
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import polars as pl

from devkit.world import World
from memberflow.core.settings import Settings, apply_privacy_defaults
from memberflow.outreach.outcomes import units
from memberflow.outreach.uplift import UpliftError, backtest, uplift_frame
from memberflow.segments import load_segments
from memberflow.transform import latest_landed_day
from memberflow.warehouse import read_warehouse

ID_KEY = "memberflow-bench-id-key"  # bench/uplift_world.py's
BUDGETS = (0.1, 0.2, 0.3, 0.5)


def per_1000(selected: np.ndarray) -> float:
    return 1000.0 * float(selected.mean()) if len(selected) else float("nan")


def top(score: np.ndarray, tie: np.ndarray, share: float) -> np.ndarray:
    """Indices of the top ``share`` of the units by score (missing last, ties by the stable hash)."""
    score = np.where(np.isnan(score), -np.inf, score)
    order = np.lexsort((tie, -score))
    return order[: max(1, round(share * len(order)))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="bench/uplift_world.py's working folder")
    parser.add_argument("--segments", type=Path, help="the segments library the deliveries used")
    parser.add_argument("--json", type=Path, help="write the comparison here")
    args = parser.parse_args()
    apply_privacy_defaults()
    if args.segments:
        os.environ["MEMBERFLOW_SEGMENTS"] = str(args.segments.resolve())
    env = {
        "MEMBERFLOW_HOME": str(args.out / "ws"),
        "MEMBERFLOW_ID_KEY": ID_KEY,
        "MEMBERFLOW_DATA_DIR": str(args.out / "data"),
        "MEMBERFLOW_SECRETS_DIR": str(args.out / "secrets"),
    }
    os.environ.update(env)
    settings = Settings.from_env(env)
    world = World(settings.data_dir)
    last = latest_landed_day(settings)
    with read_warehouse(settings) as con:
        compared = units(con, last)
    truth = world.true_outcomes(settings, compared).select(
        "segment",
        "member_id",
        pl.col("as_of").alias("as_of_date"),
        (pl.col("y1").cast(int) - pl.col("y0")).cast(int).alias("effect"),
    )
    rows = []
    for seg in load_segments():
        began = time.perf_counter()
        with read_warehouse(settings) as con:
            frame, features = uplift_frame(con, seg, last)
        try:
            result, learner = backtest(frame, features, seg)
        except UpliftError as exc:
            print(f"{seg.name}: {exc}")
            continue
        valid = frame[frame["week"] >= np.datetime64(result.validation_weeks[0])].reset_index(drop=True)
        effects = (
            pl.from_pandas(valid[["member_id", "as_of_date"]])
            .with_columns(pl.col("as_of_date").cast(pl.Date), segment=pl.lit(seg.name))
            .join(truth, on=["segment", "member_id", "as_of_date"], how="left")
        )
        if effects["effect"].null_count():
            raise SystemExit(f"{seg.name}: {effects['effect'].null_count()} decisions without a truth")
        effect = effects["effect"].to_numpy()
        predicted = learner.predict(valid)
        tie = valid["tie"].to_numpy()
        base = valid["baseline"].to_numpy(dtype="float64")
        row = {
            "segment": seg.name,
            "baseline": result.baseline,
            "validation_decisions": len(valid),
            "true_uplift_mean": round(float(effect.mean()), 4),
            "promoted": result.promote,
            "backtest": {
                "qini_uplift": round(result.qini_uplift, 5),
                "qini_baseline": round(result.qini_baseline, 5),
                "wins": result.wins,
                "beats_random": result.beats_random,
            },
            "per_1000_sends": {},
            "seconds": round(time.perf_counter() - began, 1),
        }
        for share in BUDGETS:
            ours = per_1000(effect[top(predicted, tie, share)])
            theirs = per_1000(effect[top(base, tie, share)])
            chance = per_1000(effect[top(np.full(len(tie), np.nan), tie, share)])
            row["per_1000_sends"][f"top {share:.0%}"] = {
                "uplift": round(ours, 1),
                "rank_by": round(theirs, 1),
                "random": round(chance, 1),
                "ratio": round(ours / theirs, 2) if theirs > 0 else None,
            }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
