"""Benchmark: a segment's members streamed as CSV by the ops API, masked and unmasked.

A child process writes a warehouse with one segment of N members and one of N/10 (memberships, members,
features, tags, three models' scores with reasons, identifiers, ledger) and a contact vault. This process
then serves the real app with uvicorn and downloads each export over HTTP with a streaming client,
printing rows per second, time to first byte and the process's peak RSS after each export. Bounded memory
shows as the same peak for the small and the big segment.

    .venv/bin/python bench/api_export.py --members 100000
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETUP = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import duckdb, pyarrow as pa, pyarrow.parquet as pq
    from memberflow.core.settings import Settings
    from memberflow.core.phones import phone_token
    from memberflow.core.vault import ContactVault

    home, n = Path(sys.argv[1]), int(sys.argv[2])
    s = Settings.from_env({"MEMBERFLOW_HOME": str(home)})
    home.mkdir(parents=True, exist_ok=True)
    key = s.id_key()
    phones = [f"139{i:08d}" for i in range(n)]
    tokens = [phone_token(p, key) for p in phones]
    vault = ContactVault(s.vault_key())
    folder = s.vault_dir / "store_pos" / "members" / "dt=2026-03-01"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"phone_token": tokens, "phone_sealed": [vault.seal(p) for p in phones]}),
                   folder / "part-0.parquet")
    con = duckdb.connect(str(s.warehouse_path))
    con.register("t", pa.table({"i": list(range(n)), "token": tokens,
                                "masked": [p[:3] + "****" + p[-4:] for p in phones]}))
    con.execute('''
        create table m as select i, 'm' || lpad(i::varchar, 15, '0') as member_id, token, masked from t;
        create table dim_member as select member_id, date '2025-06-01' as first_seen_on,
            'wecom' as acquisition_channel, 'staff' || (i % 50) as staff_owner,
            ['wecom', 'store_pos'] as channels_used,
            masked as phone_masked, false as marketing_opt_out, true as health_data_consent from m;
        create table member_identifiers as
            select member_id, 'phone_token' as id_type, token as id_value,
                date '2025-06-01' as first_seen_on from m
            union all select member_id, 'unionid', 'o6_' || member_id, date '2025-06-01' from m
            union all select member_id, 'external_userid', 'wm' || member_id, date '2025-06-01' from m;
        create table member_id_history (retired_member_id varchar, member_id varchar, changed_on date);
        create table member_features as select member_id, date '2026-03-02' as as_of_date,
            'silent' as lifecycle_stage, 'repeat' as funnel_stage, '120_280' as value_tier from m;
        create table member_tags as select member_id, g as tag_group, v as tag_value,
            date '2026-01-01' as valid_from, null::date as valid_to, false as health_related
            from m, (values ('lifecycle', 'silent'), ('interest', 'calcium'), ('value_tier', '120_280'))
                as x(g, v);
        create table member_scores as select member_id, model, date '2026-03-02' as as_of,
            ((i * 7919) % 1000) / 1000.0 as probability, 1 + (i % 10) as decile,
            ['no activity for 33 days', 'came in through wecom', 'reachable on 2 channels'] as reasons,
            '1' as model_version, now()::timestamp as scored_at
            from m, (values ('churn'), ('repurchase'), ('conversion')) as x(model);
        create table segment_memberships as select date '2026-03-02' as as_of, member_id,
            case when i < $big then 'big' else 'small' end as segment, 'file' as channel,
            10 as priority,
            'send' as status, null::varchar as reason, false as holdout, false as health_based,
            'k/' || member_id as idempotency_key, now()::timestamp as planned_at from m;
        create table delivery_ledger as select idempotency_key, '2026-03-02' as as_of, segment, member_id,
            channel, 'sent' as status from segment_memberships;
    '''.replace("$big", str(n * 10 // 11)))
    con.close()
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--members", type=int, default=100_000, help="members of the big segment")
    args = parser.parse_args()
    total = args.members + args.members // 10  # the big segment and one a tenth its size

    import httpx

    from devkit.background import BackgroundServer
    from memberflow.api.access import AccessStore
    from memberflow.api.app import create_app
    from memberflow.core.settings import Settings

    with tempfile.TemporaryDirectory(prefix="memberflow-bench-api-") as tmp:
        home = Path(tmp) / "ws"
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", SETUP, str(home), str(total)], check=True,
                       cwd=Path(__file__).resolve().parents[1])  # fmt: skip
        print(f"workspace with {total:,} members written in {time.perf_counter() - began:.1f} s")
        settings = Settings.from_env({"MEMBERFLOW_HOME": str(home)})
        admin = AccessStore.open(settings).create("bench", "admin").token
        with (
            BackgroundServer(create_app(settings), name="ops API") as server,
            httpx.Client(timeout=600) as client,
        ):
            headers = {"Authorization": f"Bearer {admin}"}
            client.get(f"{server.url}/api/segments", headers=headers).raise_for_status()
            base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"server up, peak RSS so far {base_rss:.0f} MiB")
            columns = ("export", "rows", "bytes", "first byte", "total", "rows/s", "peak RSS")
            print("{:<22}{:>10}{:>14}{:>12}{:>9}{:>10}{:>11}".format(*columns))
            for segment, unmasked in (("small", False), ("big", False), ("small", True), ("big", True)):
                url = f"{server.url}/api/segments/{segment}/export.csv?unmasked={str(unmasked).lower()}"
                started = time.perf_counter()
                first = None
                size = lines = 0
                with client.stream("GET", url, headers=headers) as res:
                    res.raise_for_status()
                    for chunk in res.iter_bytes():
                        first = first or time.perf_counter() - started
                        size += len(chunk)
                        lines += chunk.count(b"\n")
                elapsed = time.perf_counter() - started
                rows = lines - 1
                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                label = f"{segment} {'unmasked' if unmasked else 'masked'}"
                speed = rows / elapsed
                figures = (
                    f"{rows:>10,}{size:>14,}{first:>11.2f}s{elapsed:>8.2f}s{speed:>10,.0f}{peak:>7.0f} MiB"
                )
                print(f"{label:<22}{figures}")


if __name__ == "__main__":
    main()
