"""Benchmark: members through the webhook connector against a local server limited to N requests/s.

Prints the achieved request rate as a share of the server's limit (aim: at least 90 %), messages per second,
429s met, and duplicates counted on the receiving side (must be 0). The whole dispatch path runs: ledger
writes around every batch (SQLite, synchronous), the client-side rate limiter, retries, JSON encoding.

    .venv/bin/python bench/deliver_webhook.py --members 100000 --limit 20 --batch-size 500
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from devkit.sandbox import SandboxConfig, SandboxServer
from memberflow.core.settings import Settings
from memberflow.outreach.connectors import ChannelConfig, Message, WebhookConnector, dispatch
from memberflow.outreach.ledger import Ledger
from memberflow.outreach.suppression import CHINA


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--limit", type=int, default=20, help="server limit, requests per second")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--pace", type=float, default=1.0, help="client rate as a share of the limit")
    args = parser.parse_args()

    now = datetime(2026, 3, 2, 10, tzinfo=CHINA)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env({"MEMBERFLOW_HOME": tmp, "MEMBERFLOW_ID_KEY": "bench"})
        messages = [
            Message(
                f"bench/m{i:08d}/2026-03-02",
                f"m{i:08d}",
                "bench",
                "webhook",
                "2026-03-02",
                "replenishment_coupon",
                ["calcium due in 3 days", "buys every 31 days on average"],
                {"unionid": f"u{i:08d}"},
            )
            for i in range(args.members)
        ]
        ledger = Ledger.open(settings)
        run_id = ledger.start_run(now.date(), now, False)
        began = time.perf_counter()
        rows = [
            {"idempotency_key": m.key, "as_of": m.as_of, "segment": m.segment, "member_id": m.member_id,
             "channel": "webhook", "phone_token": None}
            for m in messages
        ]  # fmt: skip
        ledger.decide(run_id, now, rows)
        decided = time.perf_counter() - began
        config = SandboxConfig(limits={"webhook": args.limit}, window_seconds=1.0)
        with SandboxServer(config) as server:
            channel = ChannelConfig(
                "webhook",
                url=f"{server.url}/webhook/segments",
                batch_size=args.batch_size,
                rate_per_second=args.limit * args.pace,
                timeout_seconds=10,
                max_attempts=10,
                backoff_seconds=0.05,
                backoff_max_seconds=5,
            )
            connector = WebhookConnector(channel, settings, lambda: now)
            cpu0 = time.process_time()
            began = time.perf_counter()
            stats = dispatch(connector, messages, ledger, run_id, lambda: now)
            wall = time.perf_counter() - began
            cpu = time.process_time() - cpu0
            connector.close()
            snap = server.state.snapshot()
        per_key = Counter(r["key"] for r in snap["received"])
        minimum = (stats.requests - stats.retried_requests) / args.limit  # the fastest the limit allows
        lines = [
            ("members", f"{args.members:,} (batch {args.batch_size}, limit {args.limit} req/s)"),
            ("ledger decide", f"{decided:.2f} s"),
            ("dispatch wall / cpu", f"{wall:.2f} s / {cpu:.2f} s"),
            ("requests", f"{stats.requests:,} ({stats.retried_requests} retried)"),
            ("answered 429", f"{snap['rejected'].get('rate_limited', 0)}"),
            (
                "achieved",
                f"{stats.requests / wall:.2f} req/s = {stats.requests / wall / args.limit:.1%} of the limit",
            ),
            ("messages per second", f"{stats.sent / wall:,.0f}"),
            ("time at the limit", f"{minimum:.2f} s -> efficiency {minimum / wall:.1%}"),
            ("delivered members", f"{len(per_key):,}"),
            ("duplicates applied", f"{sum(per_key.values()) - len(per_key)}"),
            ("duplicate keys refused", f"{snap['duplicates']}"),
            ("failed", f"{sum(stats.failed.values())}"),
            ("peak memory", f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB"),
        ]
        for label, value in lines:
            print(f"{label:<24}{value}")
        ledger.close()


if __name__ == "__main__":
    main()
