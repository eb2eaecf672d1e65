"""Benchmark: what outcome attribution and the uplift report add to the daily run at scale.

Generates a sample (--members × --days), lands and builds it, then writes --decision-days days of segment
decisions at the volume the segment library gave on the 1M-member harness run (about 664,000 decisions a
day: 6,400 sent, 66,649 held out, the rest over a segment's cap or otherwise suppressed) into
``segment_memberships``, with the sent ones in ``delivery_ledger``. Decisions are drawn by hash (the same
two thirds of the members every day, in the library's segments, 10 % held out), not planned: planning 60
days at 1M members would take hours, and attribution's cost depends on how many decisions there are and
on the members' orders and activity, not on who the rules chose. They are stored in date order, as the
daily plans append them.

Then three daily runs, each landing one new day and building:
- A: with the decisions set aside (segment_outcomes builds empty);
- first attribution: with them, segment_outcomes attributing every decision (once, when deliveries begin
  or after a full refresh);
- B: the next day, in steady state, after that day's plan added one more date of decisions: segment_outcomes
  attributes the new date and recounts, of the rows whose windows have not settled (closed
  outcome_late_days before the last day), those of members with something new since the last build
  (dbt_project/macros/outcomes.sql); the rest stay as stored.
Reported: both builds' wall time, attribution's own dbt time (segment_outcome_members,
segment_outcome_counts, the segment_outcomes view joining them, and their tests, from run_results.json),
and the uplift report over every matured week (wall, peak RSS of its process).

    .venv/bin/python bench/outcomes_cost.py --members 1000000 --days 120 --decision-days 60 --out /tmp/oc
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memberflow.core.settings import Settings, apply_privacy_defaults

ID_KEY = "memberflow-bench-id-key"
START = date(2025, 1, 1)
SHARE_DECIDED = 0.66  # of all members, each day (664,000 of 1,000,000 on the harness run)
SHARE_SENT = 6_400 / 664_000  # of the decided members not held out
# attribution's models: the members followed, the stored counts and the view joining them
ATTRIBUTION = ("segment_outcome_members", "segment_outcome_counts", "segment_outcomes")


def _settings(out: Path) -> Settings:
    env = {
        "MEMBERFLOW_HOME": str(out / "ws"),
        "MEMBERFLOW_ID_KEY": ID_KEY,
        "MEMBERFLOW_DATA_DIR": str(out / "data"),
        "MEMBERFLOW_SECRETS_DIR": str(out / "secrets"),
    }
    os.environ.update(env)
    return Settings.from_env(env)


def _dbt_seconds(settings: Settings, names: tuple[str, ...] = ATTRIBUTION) -> dict[str, float]:
    """Execution time of the models ``names`` and of their tests in the last dbt invocation."""
    from memberflow.dbt_env import dbt_environment

    results = Path(dbt_environment(settings)["DBT_TARGET_PATH"]) / "run_results.json"
    nodes = json.loads(results.read_text())["results"]
    models = {f"model.memberflow.{m}" for m in names}
    model = sum(n["execution_time"] for n in nodes if n["unique_id"] in models)
    tests = sum(
        n["execution_time"]
        for n in nodes
        if n["unique_id"].startswith("test.") and any(m in n["unique_id"] for m in names)
    )
    total = sum(n["execution_time"] for n in nodes)
    return {"model": round(model, 2), "tests": round(tests, 2), "all_nodes": round(total, 2)}


def write_decisions(settings: Settings, first: date, days: int, replace: bool = True) -> dict:
    """segment_memberships and delivery_ledger rows for ``days`` delivery days from ``first`` (replacing
    every earlier decision, or only those of these days)."""
    from memberflow.outreach.run import LEDGER_DDL, MEMBERSHIPS_DDL
    from memberflow.segments import load_segments
    from memberflow.warehouse import open_warehouse

    segments = load_segments()
    # segment by a member hash, in proportion to the library's daily caps (the capped rows dominate anyway)
    bounds, total = [], sum(s.daily_cap for s in segments)
    running = 0
    for s in segments:
        running += s.daily_cap
        bounds.append((running / total, s))
    case = "case " + " ".join(
        f"when seg_hash < {b} then '{s.name}|{s.channel}|{s.message}|{s.outcome}|{s.outcome_days}'"
        for b, s in bounds
    )
    case += f" else '{bounds[-1][1].name}|x|x|order|14' end"
    began = time.perf_counter()
    with open_warehouse(settings, read_only=False) as con:
        con.execute(MEMBERSHIPS_DDL)
        con.execute(LEDGER_DDL)
        last = first + timedelta(days=days - 1)
        within = "true" if replace else f"as_of between date '{first}' and date '{last}'"
        con.execute(f"delete from segment_memberships where {within}")
        con.execute(f"delete from delivery_ledger where {within}")
        con.execute(
            f"""
            insert into segment_memberships (as_of, member_id, segment, channel, priority, status, reason,
                holdout, health_based, idempotency_key, planned_at, message, outcome, outcome_days)
            with members as (
                select member_id, (hash(member_id || 'seg') % 1000000) / 1000000.0 as seg_hash
                from dim_member
                where (hash(member_id || 'decided') % 1000000) / 1000000.0 < {SHARE_DECIDED}
            ),
            picked as (
                select member_id, string_split({case}, '|') as s from members
            ),
            days as (select unnest(range(0, {days})) as d)
            select
                date '{first}' + d::int as as_of, member_id, s[1], s[2], 1,
                case
                    when (hash(member_id || s[1]) % 1000) < 100 then 'holdout'
                    when (hash(member_id || d::varchar) % 1000000) / 1000000.0 < {SHARE_SENT} then 'send'
                    else 'suppressed'
                end as status,
                case
                    when (hash(member_id || s[1]) % 1000) < 100 then null
                    when (hash(member_id || d::varchar) % 1000000) / 1000000.0 < {SHARE_SENT} then null
                    else 'segment_daily_cap'
                end as reason,
                (hash(member_id || s[1]) % 1000) < 100 as holdout, false,
                s[1] || ':' || member_id || ':' || (date '{first}' + d::int)::varchar as idempotency_key,
                (date '{first}' + d::int)::timestamp + interval 9 hour,
                s[3], s[4], s[5]::int
            from picked cross join days
            order by as_of, s[1]
            """
        )
        con.execute(
            f"""
            insert into delivery_ledger (idempotency_key, as_of, segment, member_id, channel, status,
                attempts, decided_day, updated_at, sent_at)
            select idempotency_key, as_of, segment, member_id, channel, 'sent', 1, as_of,
                planned_at + interval 1 minute, planned_at + interval 1 minute
            from segment_memberships where status = 'send' and {within}
            """
        )
        counts = dict(con.execute("select status, count(*) from segment_memberships group by 1").fetchall())
    return {"decisions": counts, "seconds": round(time.perf_counter() - began, 1)}


def _set_aside(settings: Settings, aside: bool) -> None:
    from memberflow.warehouse import open_warehouse

    with open_warehouse(settings, read_only=False) as con:
        if aside:
            con.execute("alter table segment_memberships rename to bench_memberships_aside")
        else:
            con.execute("alter table bench_memberships_aside rename to segment_memberships")


def daily(settings: Settings, day: date) -> dict:
    from memberflow.pipeline import land_days
    from memberflow.transform import build_warehouse

    run = land_days(settings, [day])
    began = time.perf_counter()
    result = build_warehouse(settings)
    wall = time.perf_counter() - began
    if result.failures:
        raise SystemExit(f"dbt build failed: {result.failures}")
    return {"day": day.isoformat(), "landed_ok": run.ok, "build_s": round(wall, 1),
            "segment_outcomes": _dbt_seconds(settings)}  # fmt: skip


def _report(out: Path, as_of: date, queue) -> None:
    settings = _settings(out)
    from memberflow.outreach.outcomes import outcomes_report

    began = time.perf_counter()
    rows = outcomes_report(settings, as_of)
    queue.put(
        {
            "rows": len(rows),
            "seconds": round(time.perf_counter() - began, 1),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=120, help="days of landed history before the daily runs")
    parser.add_argument("--decision-days", type=int, default=60)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    apply_privacy_defaults()
    settings = _settings(args.out)
    figures: dict = {"members": args.members, "days": args.days, "decision_days": args.decision_days}

    def stage(name: str, began: float) -> None:
        figures.setdefault("seconds", {})[name] = round(time.perf_counter() - began, 1)
        print(f"{name}: {figures['seconds'][name]} s", flush=True)

    from devkit.generate import GenerateConfig, generate
    from memberflow.pipeline import land_days
    from memberflow.transform import build_warehouse

    history = [START + timedelta(days=i) for i in range(args.days)]
    t = time.perf_counter()
    config = settings.data_dir / "_truth" / "config.json"
    if not config.exists() or json.loads(config.read_text()).get("days") != args.days + 3:
        generate(GenerateConfig(args.members, START, args.days + 3, 1, settings.data_dir), ID_KEY.encode())
    stage("generate", t)
    t = time.perf_counter()
    if not settings.warehouse_path.exists():
        land_days(settings, history)
        result = build_warehouse(settings)
        if result.failures:
            raise SystemExit(f"dbt build failed: {result.failures}")
    stage("land and build history", t)

    # decisions end where the history does; their last windows are still open, like a live warehouse's
    first = history[-1] - timedelta(days=args.decision_days - 1)
    figures["write_decisions"] = write_decisions(settings, first, args.decision_days)
    print(figures["write_decisions"], flush=True)

    _set_aside(settings, True)
    figures["daily_without"] = daily(settings, history[-1] + timedelta(days=1))
    print(figures["daily_without"], flush=True)
    _set_aside(settings, False)
    figures["first_attribution"] = daily(settings, history[-1] + timedelta(days=2))
    print(figures["first_attribution"], flush=True)
    # the next day's plan, as every delivery day writes one, then its build
    figures["next_decisions"] = write_decisions(settings, history[-1] + timedelta(days=1), 1, replace=False)
    print(figures["next_decisions"], flush=True)
    figures["daily_with"] = daily(settings, history[-1] + timedelta(days=3))
    print(figures["daily_with"], flush=True)

    queue = multiprocessing.get_context("spawn").Queue()
    child = multiprocessing.get_context("spawn").Process(
        target=_report, args=(args.out, history[-1] + timedelta(days=3), queue)
    )
    child.start()
    figures["report"] = queue.get()
    child.join()
    print(figures["report"], flush=True)

    with_, without = figures["daily_with"], figures["daily_without"]
    added = with_["segment_outcomes"]["model"] + with_["segment_outcomes"]["tests"]
    figures["attribution_share_of_daily_build"] = round(added / (with_["build_s"] - added), 3)
    figures["build_ratio_with_over_without"] = round(with_["build_s"] / without["build_s"], 3)
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
