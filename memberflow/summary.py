"""What a workspace holds: per-table totals gathered from the extract run reports."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

import duckdb

from memberflow.core.contracts import CONTRACTS
from memberflow.core.settings import Settings
from memberflow.warehouse import table_names


@dataclass
class TableSummary:
    name: str
    days: int = 0
    read: int = 0
    landed: int = 0
    quarantined: int = 0
    reasons: Counter = field(default_factory=Counter)
    failed_days: list[str] = field(default_factory=list)

    @property
    def top_reasons(self) -> str:
        return ", ".join(f"{reason} {count}" for reason, count in self.reasons.most_common(3))


@dataclass
class WorkspaceSummary:
    tables: list[TableSummary]

    @property
    def read(self) -> int:
        return sum(t.read for t in self.tables)

    @property
    def landed(self) -> int:
        return sum(t.landed for t in self.tables)

    @property
    def quarantined(self) -> int:
        return sum(t.quarantined for t in self.tables)


def workspace_summary(settings: Settings) -> WorkspaceSummary:
    tables = {c.name: TableSummary(c.name) for c in CONTRACTS}
    for path in sorted((settings.reports_dir / "extract").glob("dt=*/*.json")):
        report = json.loads(path.read_text())
        summary = tables.get(f"{report['channel']}.{report['table']}")
        if summary is None:
            continue
        summary.read += report["read"]
        summary.quarantined += report["quarantined"]
        summary.reasons.update(report["by_reason"])
        if report["status"] == "ok":
            summary.days += 1
            summary.landed += report["landed"]
        else:
            summary.failed_days.append(report["date"])
    return WorkspaceSummary(list(tables.values()))


WAREHOUSE_TABLES = (
    "dim_member",
    "member_identifiers",
    "member_id_history",
    "fct_orders",
    "fct_member_daily_engagement",
    "member_tags",
    "member_features",
    "identity_dropped_edges",
    "identity_candidate_links",
)


def warehouse_counts(settings: Settings) -> dict[str, int]:
    """Row counts of the published marts (read-only connection)."""
    counts = {}
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        existing = table_names(con)
        for name in WAREHOUSE_TABLES:
            if name in existing:
                counts[name] = con.table(name).aggregate("count(*)").fetchall()[0][0]
    return counts
