"""Sample generation and extract throughput at scale.

Run: uv run python bench/generate_extract.py --members 100000 --days 365
Generates the sample into a temporary workspace, then lands the last day and reports wall time, CPU time,
peak memory (RSS of this process) and rows per second for each step.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from memberflow.config import Settings
from memberflow.generate import GenerateConfig, generate
from memberflow.land import land_days


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--start", default="2025-01-01")
    args = parser.parse_args()
    start = date.fromisoformat(args.start)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = Settings.from_env(
            {
                "MEMBERFLOW_HOME": str(root / "ws"),
                "MEMBERFLOW_DATA_DIR": str(root / "data"),
                "MEMBERFLOW_ID_KEY": "bench-key",
            }
        )
        wall, cpu = time.perf_counter(), time.process_time()
        summary = generate(
            GenerateConfig(args.members, start, args.days, 1, root / "data"), settings.id_key()
        )
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rows = sum(summary.rows.values())
        size = sum(p.stat().st_size for p in (root / "data").rglob("*") if p.is_file()) / 2**20
        print(
            f"generate {args.members:,} members x {args.days} days: {wall:.1f} s wall, {cpu:.1f} s CPU, "
            f"{rows:,} rows ({rows / wall:,.0f} rows/s), {size:,.0f} MiB on disk, "
            f"peak RSS {_peak_mb():,.0f} MiB"
        )

        last = start + timedelta(days=args.days - 1)
        wall, cpu = time.perf_counter(), time.process_time()
        result = land_days(settings, [last])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        read = sum(r.read for r in result.reports)
        print(
            f"land {last} (12 tables, extract + landing gate + publish): {wall:.1f} s wall, "
            f"{cpu:.1f} s CPU, {read:,} rows read "
            f"({read / wall:,.0f} rows/s), {sum(r.quarantined for r in result.reports):,} quarantined, "
            f"errors: {result.errors or 'none'}, peak RSS {_peak_mb():,.0f} MiB"
        )


if __name__ == "__main__":
    main()
