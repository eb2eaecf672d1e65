"""A real retail transaction log as store_pos landing files: the CDNOW dataset (Fader & Hardie).

Run: .venv/bin/python bench/cdnow_store_pos.py --out DIR [--master FILE]

CDNOW_master.txt holds every purchase of the 23,570 people who first bought at the CDNOW online music store
in the first quarter of 1997, through June 1998 (69,659 lines: customer, date, CDs, dollars). It is the
dataset the BG/NBD paper was fitted on. It is not kept in this repository: without --master, the script
downloads the `lifetimes` 0.11.3 wheel from the package index (it ships the file) and reads it from there.

The log becomes the three store_pos tables a drugstore chain delivers — `members` (a card and a phone per
customer, joined on the first purchase day), `orders` (one receipt per line) and `order_items` (one line per
receipt) — in daily partitions. Dates move forward 28 years (weekdays stay the same), so January 1997 becomes
January 2025. The catalogue is not health products: every line is filed under one category, so category
features carry nothing and the models must learn from purchase timing alone. Phones are made up per
customer (deterministic, never a blocked test number). No engagement channel exists.

Then, for example:
  MEMBERFLOW_HOME=/tmp/cdnow memberflow build --data-dir DIR
  MEMBERFLOW_HOME=/tmp/cdnow memberflow train --model repurchase --horizon-days 90
"""

from __future__ import annotations

import argparse
import csv
import io
import subprocess
import sys
import tempfile
import zipfile
from collections import defaultdict
from datetime import date, datetime, timedelta
from pathlib import Path

SHIFT_YEARS = 28
WHEEL = "lifetimes==0.11.3"
CATEGORY = "calcium"


def master_lines(master: Path | None) -> list[str]:
    if master is not None:
        return master.read_text().splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL, "-d", tmp], check=True
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as z:
            return z.read("lifetimes/datasets/CDNOW_master.txt").decode().splitlines()


def shifted(day: str) -> date:
    d = datetime.strptime(day, "%Y%m%d").date()
    return d.replace(year=d.year + SHIFT_YEARS)


def phone(customer: int) -> str:
    return f"1{3 + customer % 6}{(customer * 7_919_731 + 12_345_678) % 10**9:09d}"


def write(out: Path, table: str, day: date, header: list[str], rows: list[list]) -> None:
    folder = out / "store_pos" / table / f"dt={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    (folder / "part-0.csv").write_text(buffer.getvalue())


def convert(lines: list[str], out: Path) -> dict[str, int]:
    orders: dict[date, list[list]] = defaultdict(list)
    items: dict[date, list[list]] = defaultdict(list)
    first_seen: dict[int, date] = {}
    for n, line in enumerate(lines):
        parts = line.split()
        if len(parts) != 4 or not parts[0].isdigit():
            continue  # the header line
        customer, day, qty, amount = int(parts[0]), shifted(parts[1]), int(parts[2]), float(parts[3])
        if amount <= 0 or qty <= 0:
            continue  # a handful of zero-value lines: not purchases
        first_seen[customer] = min(first_seen.get(customer, day), day)
        receipt = f"R{n:08d}"
        card = f"C{customer:08d}"
        when = datetime.combine(day, datetime.min.time()) + timedelta(hours=10, seconds=n % 28_000)
        orders[day].append(
            ["S001", receipt, card, when.strftime("%Y-%m-%d %H:%M:%S"), f"{amount:.2f}", "false"]
        )
        items[day].append(["S001", receipt, f"SKU-{CATEGORY}-cd", CATEGORY, qty, f"{amount / qty:.2f}"])
    members: dict[date, list[list]] = defaultdict(list)
    for customer, day in first_seen.items():
        stamp = f"{day.isoformat()} 09:00:00"
        members[day].append([f"C{customer:08d}", phone(customer), "S001", stamp, "", stamp])
    last = max(orders)
    day = min(orders)
    while day <= last:  # every day gets a partition, empty ones included: the channel delivered nothing
        write(
            out,
            "orders",
            day,
            ["store_id", "receipt_no", "card_no", "order_time", "amount_cny", "pharmacist_consult"],
            orders.get(day, []),
        )
        write(
            out,
            "order_items",
            day,
            ["store_id", "receipt_no", "sku_id", "category", "qty", "unit_price_cny"],
            items.get(day, []),
        )
        write(
            out,
            "members",
            day,
            ["card_no", "mobile", "store_id", "join_time", "birth_date", "updated_at"],
            members.get(day, []),
        )
        day += timedelta(days=1)
    return {
        "customers": len(first_seen),
        "orders": sum(len(v) for v in orders.values()),
        "days": (last - min(orders)).days + 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--master", type=Path, default=None, help="CDNOW_master.txt, if already at hand")
    args = parser.parse_args()
    summary = convert(master_lines(args.master), args.out)
    print(
        f"{summary['customers']:,} customers, {summary['orders']:,} receipts over {summary['days']} days "
        f"written as store_pos landing files under {args.out}"
    )


if __name__ == "__main__":
    main()
