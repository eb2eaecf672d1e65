"""Validating the marts of a large member base: wall time and peak memory of the marts quality gate.

Run: .venv/bin/python bench/quality_marts.py --members 1000000 [--workdir DIR]

How the warehouse is made: a real sample (2,000 people × 60 days) is generated, landed through the landing
gate and built with dbt; its four gated marts (dim_member, member_identifiers, member_tags, member_features)
and category_catalog are then replicated in DuckDB, each copy with its own member ids and identifier values,
until dim_member holds --members rows. The distributions and schemas are the real ones; only the scale is
multiplied. The gate then runs in a fresh child process, which reports its own wall time, CPU time and peak
RSS, so nothing of the preparation is counted.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KEY = "bench-quality-key"


def _settings(home: Path):
    from memberflow.core.settings import Settings

    return Settings.from_env({"MEMBERFLOW_HOME": str(home), "MEMBERFLOW_ID_KEY": KEY})


def prepare(root: Path, members: int) -> tuple[Path, date]:
    import duckdb

    from devkit.generate import GenerateConfig, generate
    from memberflow.pipeline import land_pending
    from memberflow.transform import build_warehouse, latest_landed_day

    small = _settings(root / "small")
    if not small.warehouse_path.exists():
        generate(GenerateConfig(2000, date(2026, 1, 1), 60, 5, root / "data"), KEY.encode())
        run = land_pending(small, root / "data")
        assert run.ok, run.errors
        build_warehouse(small)
    day = latest_landed_day(small)
    big = _settings(root / f"big-{members}")
    big.home.mkdir(parents=True, exist_ok=True)
    big.warehouse_path.unlink(missing_ok=True)
    began = time.perf_counter()
    with duckdb.connect(str(big.warehouse_path)) as con:
        con.execute(f"attach '{small.warehouse_path}' as src (read_only)")
        base = con.sql("select count(*) from src.dim_member").fetchall()[0][0]
        copies = math.ceil(members / base)
        con.execute(f"create table copies as select range as k from range({copies})")
        con.execute("create table category_catalog as select * from src.category_catalog")
        con.execute(
            "create table dim_member as select * replace (member_id || '-' || k as member_id) "
            f"from src.dim_member, copies order by k, member_id limit {members}"
        )
        con.execute(
            "create table member_identifiers as select * replace "
            "(member_id || '-' || k as member_id, id_value || '-' || k as id_value) "
            "from src.member_identifiers, copies "
            "where member_id || '-' || k in (select member_id from dim_member)"
        )
        for table in ("member_tags", "member_features"):
            con.execute(
                f"create table {table} as select * replace (member_id || '-' || k as member_id) "
                f"from src.{table}, copies where member_id || '-' || k in (select member_id from dim_member)"
            )
        counts = {
            t: con.sql(f"select count(*) from {t}").fetchall()[0][0]
            for t in ("dim_member", "member_identifiers", "member_tags", "member_features")
        }
    print(
        f"prepared in {time.perf_counter() - began:.0f} s: "
        + ", ".join(f"{t} {n:,}" for t, n in counts.items())
    )
    return big.home, day


def validate(home: Path, day: date) -> None:
    """Child process: run the marts gate and print one JSON line of figures."""
    from expectations.marts import gate_warehouse

    wall, cpu = time.perf_counter(), time.process_time()
    result = gate_warehouse(_settings(home), day)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "status": result.status,
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu, 1),
                "peak_rss_mib": round(peak),
                "rows": {s.subject: s.rows for s in result.suites},
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--validate-only", nargs=2, metavar=("HOME", "DATE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.validate_only:
        validate(Path(args.validate_only[0]), date.fromisoformat(args.validate_only[1]))
        return
    root = args.workdir or Path(tempfile.mkdtemp(prefix="mf-bench-quality-"))
    home, day = prepare(root, args.members)
    child = subprocess.run(
        [sys.executable, __file__, "--validate-only", str(home), day.isoformat()],
        capture_output=True,
        text=True,
        check=True,
    )
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    rows = figures["rows"]
    print(
        f"marts gate over {rows['dim_member']:,} members ({rows['member_identifiers']:,} identifiers, "
        f"{rows['member_features']:,} feature rows, member_tags validated as {rows['member_tags']} "
        f"tag aggregates): {figures['status']}, {figures['wall_s']} s wall, {figures['cpu_s']} s CPU, "
        f"peak RSS {figures['peak_rss_mib']:,} MiB (includes importing Great Expectations)"
    )


if __name__ == "__main__":
    main()
