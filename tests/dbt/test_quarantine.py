"""The warehouse's `quarantine` table holds every row extract set aside, with its reason (DESIGN §8)."""

from __future__ import annotations

import json
import re
from collections import Counter

from tests.support import query


def test_quarantine_table_accounts_for_every_quarantined_row(built) -> None:
    expected: Counter = Counter()
    for report in (built.reports_dir / "extract").glob("dt=*/*.json"):
        data = json.loads(report.read_text())
        for reason, count in data["by_reason"].items():
            expected[(data["channel"], data["table"], reason)] += count
    rows = query(built, 'select channel, "table", reason, count(*) as n from quarantine group by all')
    found = Counter({(r["channel"], r["table"], r["reason"]): r["n"] for r in rows.iter_rows(named=True)})
    assert sum(expected.values()) > 20  # the business sample carries dirty rows of several kinds
    assert found == expected
    raw = query(built, "select raw from quarantine").get_column("raw").to_list()
    # no plain mainland mobile number (an 11-digit id like a buyer's pdd_10649205595 is not one)
    assert all(raw) and not any(re.search(r"(?<!\d)1[3-9]\d{9}(?!\d)", r) for r in raw)
