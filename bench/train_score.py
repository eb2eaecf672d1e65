"""Training and scoring at scale beside bare LightGBM on the same matrix, in the same run.

Run: .venv/bin/python bench/train_score.py [--rows 1000000] [--score-rows N] [--workdir DIR]

How the matrix is made: a real sample (2,500 people × 60 days) is generated, landed through the landing gate
and built with dbt; the churn training set of its cutoffs is read from member_features, and its rows are
resampled (with a small jitter on the numeric features, so trees do not see exact copies) up to --rows. The
schema, the categorical column, the null pattern and the label relation are the real ones.

Training: memberflow's fit (LightGBM with early stopping on the held-out cutoff's tune half, then Platt
calibration), the evaluation beside the recency baseline with plots, and the MLflow logging and registration
(SQLite store), against a bare ``lightgbm.train`` with the same parameters, data and early stopping. Both run
on one thread. Scoring: memberflow's score_frame with reasons for every row (the ``score --reasons`` path:
predict, one ``pred_contrib`` pass, calibration, deciles, three reason sentences per member, an Arrow table)
plus writing it as Parquet, against a bare ``Booster.predict`` and ``pred_contrib``. The daily run scores
without reasons and explains only segment members (bench/harness.py times both).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KEY = "bench-train-key"
CUTOFFS = [date(2026, 1, 18), date(2026, 1, 25), date(2026, 2, 1), date(2026, 2, 15)]


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def built_workspace(workdir: Path):
    from memberflow.core.settings import Settings, apply_privacy_defaults

    apply_privacy_defaults()
    settings = Settings.from_env({"MEMBERFLOW_HOME": str(workdir / "ws"), "MEMBERFLOW_ID_KEY": KEY})
    if (settings.quality_dir / "published" / "marts.json").exists():
        return settings
    from devkit.generate import GenerateConfig, generate
    from expectations.marts import gate_warehouse
    from memberflow.pipeline import land_pending
    from memberflow.transform import build_warehouse, latest_landed_day

    data = workdir / "data"
    generate(GenerateConfig(2500, date(2026, 1, 1), 60, 21, data), KEY.encode())
    run = land_pending(settings, data)
    assert run.ok, run.errors
    build_warehouse(settings)
    gate_warehouse(settings, latest_landed_day(settings))
    return settings


def scaled(training_set, rows: int, seed: int = 1):
    """Resample the training set's rows per cutoff up to ``rows`` in total, jittering numeric features."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = training_set.frame
    factor = rows / len(frame)
    parts = []
    for _, part in frame.groupby("as_of_date", observed=True):
        take = rng.integers(0, len(part), round(len(part) * factor))
        parts.append(part.iloc[take])
    big = pd.concat(parts, ignore_index=True)
    big["member_id"] = [f"m{i:09d}" for i in range(len(big))]
    for column in training_set.features:
        if column in ("acquisition_channel",):
            continue
        values = big[column].to_numpy(dtype="float64")
        noise = rng.normal(0.0, 0.02, len(values)) * np.nan_to_num(np.abs(values), nan=0.0)
        big[column] = values + noise
    training_set.frame = big
    return training_set


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--score-rows",
        type=int,
        default=None,
        help="members to score (default: --rows); reasons cost TreeSHAP",
    )
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-train-"))
    workdir.mkdir(parents=True, exist_ok=True)

    import lightgbm as lgb
    import pyarrow.parquet as pq

    from ml.config import model_spec
    from ml.datasets import build_training_set
    from ml.train import evaluate, fit, lightgbm_params, register, split_holdout

    began = time.perf_counter()
    settings = built_workspace(workdir)
    spec = model_spec("churn")
    ts = scaled(build_training_set(settings, spec, CUTOFFS, 14), args.rows)
    features = ts.features
    print(
        f"matrix: {len(ts.frame):,} rows × {len(features)} features "
        f"({len(ts.train):,} train, {len(ts.holdout_frame):,} held out); prepared in "
        f"{time.perf_counter() - began:.0f} s"
    )

    # bare LightGBM: same data, parameters and early stopping
    train = ts.train
    tune, test = split_holdout(ts.holdout_frame)
    params = lightgbm_params(spec, features, len(train), 1)
    t0 = time.perf_counter()
    dtrain = lgb.Dataset(train[features], label=train["label"], categorical_feature=["acquisition_channel"])
    dtune = lgb.Dataset(tune[features], label=tune["label"], reference=dtrain)
    bare = lgb.train(
        params,
        dtrain,
        num_boost_round=spec.num_boost_round,
        valid_sets=[dtune],
        callbacks=[lgb.early_stopping(spec.early_stopping_rounds, first_metric_only=True, verbose=False)],
    )
    bare_train = time.perf_counter() - t0
    print(f"bare lightgbm.train: {bare_train:.1f} s, {bare.best_iteration} trees")

    from ml.registry import experiment_id

    # A running scheduler has its store and imports warm: neither is counted.
    experiment_id(settings, "churn")
    import matplotlib.pyplot  # noqa: F401
    import mlflow.lightgbm  # noqa: F401
    import sklearn.calibration  # noqa: F401

    t0 = time.perf_counter()
    fitted, test = fit(ts, spec, 1)
    t_fit = time.perf_counter() - t0
    evaluation = evaluate(ts, fitted, test)
    t_eval = time.perf_counter() - t0 - t_fit
    result = register(settings, evaluation)
    ours = time.perf_counter() - t0
    print(
        f"memberflow train:    {ours:.1f} s ({fitted.best_iteration} trees; fit+calibration {t_fit:.1f} s, "
        f"evaluation+baseline {t_eval:.1f} s, plots+MLflow+registry {ours - t_fit - t_eval:.1f} s; "
        f"promoted: {result.decision.promote})"
    )
    print(f"training overhead: {ours / bare_train:.3f}× bare (aim ≤ 1.15×)")

    # scoring
    import pandas as pd

    from ml.score import score_frame

    score_rows = args.score_rows or args.rows
    held = ts.holdout_frame
    frame = pd.concat([held] * -(-score_rows // len(held)), ignore_index=True).iloc[:score_rows].copy()
    frame["member_id"] = [f"s{i:09d}" for i in range(len(frame))]
    X = frame[features]
    t0 = time.perf_counter()
    fitted.booster.predict(X)
    bare_predict = time.perf_counter() - t0
    t0 = time.perf_counter()
    fitted.booster.predict(X, pred_contrib=True)
    bare_contrib = time.perf_counter() - t0
    t0 = time.perf_counter()
    table = score_frame(
        fitted.booster,
        features,
        fitted.calibration,
        frame,
        "churn",
        date(2026, 3, 2),
        "bench",
        reasons=True,
    )
    t_score = time.perf_counter() - t0
    out = workdir / "scores.parquet"
    t0 = time.perf_counter()
    pq.write_table(table, out)
    t_write = time.perf_counter() - t0
    n = len(frame)
    print(f"bare Booster.predict:        {bare_predict:.2f} s ({n / bare_predict:,.0f} rows/s)")
    print(f"bare predict(pred_contrib):  {bare_contrib:.2f} s ({n / bare_contrib:,.0f} rows/s)")
    print(
        f"memberflow scoring:          {t_score:.2f} s + Parquet write {t_write:.2f} s "
        f"({n / (t_score + t_write):,.0f} rows/s end to end, with reasons)"
    )
    print(
        f"scoring / bare predict: {(t_score + t_write) / bare_predict:.2f}×; "
        f"scoring / bare pred_contrib: {(t_score + t_write) / bare_contrib:.2f}×"
    )
    print(f"peak memory: {peak_mib():,.0f} MiB; workspace: {workdir}")


if __name__ == "__main__":
    main()
