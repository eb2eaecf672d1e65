"""Benchmark: live monitoring over every scored day of a workspace, with no shift planted, then with one.

For each day ``member_scores`` holds (from --first on), runs ``ml.monitor.monitor`` for every model with a
champion and prints the status, the largest score PSI and the largest feature PSI (calendar features left
out), and the seconds it took. A month of days without a planted shift should raise no level. Then, with
--plant, multiplies one feature of the last day by 100 (a unit changed upstream), scores that day again and
monitors it: the model should turn critical. Works on a copy: the workspace given is never changed.

    MEMBERFLOW_ID_KEY=… .venv/bin/python bench/monitor_days.py --home /tmp/uplift/ws --plant spend_total
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb

from expectations.marts import gate_warehouse
from memberflow.core.settings import Settings, apply_privacy_defaults
from memberflow.core.vocab import MODELS
from memberflow.transform import latest_landed_day
from memberflow.warehouse import published_marker
from ml.monitor import CALENDAR_FEATURES, monitor
from ml.registry import NoChampionError
from ml.score import score


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, required=True, help="a workspace with champions and scores")
    parser.add_argument("--data", type=Path, help="its source data folder")
    parser.add_argument("--first", help="the first scored day to check (YYYY-MM-DD)")
    parser.add_argument("--plant", help="then multiply this feature by 100 on the last day and check again")
    args = parser.parse_args()
    apply_privacy_defaults()
    target = Path(tempfile.mkdtemp(prefix="monitor-days-")) / "ws"
    shutil.copytree(args.home, target)
    env = {"MEMBERFLOW_HOME": str(target), **({"MEMBERFLOW_DATA_DIR": str(args.data)} if args.data else {})}
    os.environ.update(env)
    settings = Settings.from_env({**os.environ, **env})
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        days = [r[0] for r in con.execute("select distinct as_of from member_scores order by 1").fetchall()]
    if args.first:
        days = [d for d in days if d.isoformat() >= args.first]
    levels: Counter = Counter()
    for day in days:
        for model in MODELS:
            began = time.perf_counter()
            try:
                report = monitor(settings, model, day)
            except NoChampionError:
                continue
            levels[report.status] += 1
            print(_line(report, time.perf_counter() - began), flush=True)
    print(f"{len(days)} days: {dict(levels)}")
    if args.plant:
        day = days[-1]
        if not published_marker(settings, "marts").exists():  # scoring needs gated marts
            gate_warehouse(settings, latest_landed_day(settings))
        with duckdb.connect(str(settings.warehouse_path)) as con:
            con.execute(
                f"update member_features set {args.plant} = {args.plant} * 100 where as_of_date = ?", [day]
            )
        for model in MODELS:
            try:
                score(settings, model, day)
                report = monitor(settings, model, day)
            except NoChampionError:
                continue
            print("planted:", _line(report, 0.0), "|", "; ".join(report.reasons[:2]))
    shutil.rmtree(target.parent, ignore_errors=True)


def _line(report, seconds: float) -> str:
    score_psi = max((c.value for c in report.checks if c.kind == "score_drift"), default=float("nan"))
    features = [c for c in report.checks if c.kind == "feature_drift" and c.name not in CALENDAR_FEATURES]
    top = max(features, key=lambda c: c.value, default=None)
    auc = [c for c in report.checks if c.kind == "realized" and c.name.startswith("auc@")]
    reference = f"{auc[-1].reference:.3f}" if auc and auc[-1].reference is not None else "-"
    realized = f"realized AUC {auc[-1].value:.3f} vs {reference}" if auc else "no labels yet"
    return (
        f"{report.as_of} {report.model:10} {report.status:8} score PSI {score_psi:.3f}; largest feature PSI "
        f"{top.name if top else '-'} {top.value if top else float('nan'):.3f}; {realized}; {seconds:.1f} s"
    )


if __name__ == "__main__":
    main()
