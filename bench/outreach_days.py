"""Benchmark: consecutive delivery days on a scored workspace, audited at the receivers.

For each day from --last minus --days + 1 to --last: score every champion, run the scores gate, the 09:30
retry run of the day before, the day's plan and segments gate, and the delivery, against local sandbox
receivers (devkit.replay), starting from an empty delivery ledger. Then counts from what the
receivers applied: receipts per segment,
segment-days at the wrong end of their score, messages repeated within their cooldown, once-per messages
sent twice, member-days over the daily and weekly caps, and the same message within 7 days. Works on a copy:
the workspace given is never changed.

    .venv/bin/python bench/outreach_days.py --home .memberflow --last 2026-03-01 --days 7
    # audit receipts saved by an earlier run (e.g. by another version of the code) against today's rules:
    .venv/bin/python bench/outreach_days.py --home COPY --audit receipts.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devkit.replay import Receipt, audit, days_between, replay
from memberflow.core.settings import Settings, apply_privacy_defaults
from memberflow.outreach.connectors import OutreachConfig
from memberflow.segments import load_segments


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, required=True, help="a workspace with champions and built marts")
    parser.add_argument("--last", type=date.fromisoformat, help="the last day to deliver (YYYY-MM-DD)")
    parser.add_argument("--days", type=int, default=7, help="consecutive days ending on --last")
    parser.add_argument(
        "--failure-rate", type=float, default=0.1, help="share of requests the receivers fail"
    )
    parser.add_argument("--receipts", type=Path, help="write the receipts here (JSON)")
    parser.add_argument("--audit", type=Path, help="only audit these receipts against --home's scores")
    parser.add_argument("--keep", type=Path, help="keep the replayed workspace copy here")
    args = parser.parse_args()
    if not (args.home / "warehouse.duckdb").exists():
        parser.error(f"{args.home}: no warehouse.duckdb there (a workspace after `memberflow demo` or build)")
    apply_privacy_defaults()

    if args.audit:
        receipts = [
            Receipt(**{**r, "day": date.fromisoformat(r["day"])}) for r in json.loads(args.audit.read_text())
        ]
        report(Settings.from_env({"MEMBERFLOW_HOME": str(args.home)}), receipts)
        return
    if args.last is None:
        parser.error("--last is needed to replay")
    target = args.keep or Path(tempfile.mkdtemp(prefix="outreach-days-")) / "ws"
    shutil.copytree(args.home, target)
    # the replay starts from no contact history: sends the workspace made on later days would otherwise
    # sit in the replayed days' future
    (target / "outreach" / "ledger.sqlite").unlink(missing_ok=True)
    shutil.rmtree(target / "exports" / "segments", ignore_errors=True)
    settings = Settings.from_env({"MEMBERFLOW_HOME": str(target)})
    began = time.perf_counter()
    days = days_between(args.last - timedelta(days=args.days - 1), args.last)
    results = replay(
        settings,
        days,
        failure_rate=args.failure_rate,
        on_day=lambda r: print(
            f"{r.day}: {len(r.receipts)} received, {r.sent} sent, {r.failed} failed, "
            f"gate {'passed' if r.gate_ok else 'FAILED: ' + '; '.join(r.gate_failures)[:300]}",
            flush=True,
        ),
    )
    print(f"{len(days)} days replayed in {time.perf_counter() - began:.0f} s (workspace copy: {target})")
    receipts = [x for r in results for x in r.receipts]
    if args.receipts:
        args.receipts.write_text(
            json.dumps([{**dataclasses.asdict(x), "day": x.day.isoformat()} for x in receipts], indent=1)
        )
    report(settings, receipts)
    if not args.keep:
        shutil.rmtree(target.parent, ignore_errors=True)


def report(settings: Settings, receipts: list[Receipt]) -> None:
    found = audit(settings, receipts, load_segments(), OutreachConfig.load().caps)
    print(json.dumps(found.to_dict(), indent=2, ensure_ascii=False, default=str))


if __name__ == "__main__":
    main()
