"""Live model monitoring on the business sample: realized AUC checked against an independent computation,
no alarm without a shift, and a planted unit change that pauses the model's segments."""

from __future__ import annotations

from datetime import date, datetime

import duckdb
from typer.testing import CliRunner

from expectations.marts import gate_warehouse
from memberflow.cli import app
from memberflow.outreach.run import plan, write_memberships
from memberflow.segments import load_segments
from ml.monitor import monitor
from ml.score import score
from tests.support import HORIZON, SCORE_DAY, TEST_ID_KEY

EVALUATED = date(2026, 2, 15)  # the champions' held-out cutoff: its 14-day labels end on the last landed day


def _independent_auc(settings, day: date) -> float:
    """AUC of the day's repurchase scores against "bought again within the horizon", by the rank-sum formula
    in SQL (average ranks for ties), from member_scores and fct_orders alone."""
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        ((auc,),) = con.execute(
            f"""
            with labelled as (
                select s.member_id, s.probability,
                    exists (
                        select 1 from fct_orders o
                        where o.member_id = s.member_id and o.is_purchase
                            and o.order_date > s.as_of and o.order_date <= s.as_of + {HORIZON}
                    ) as label
                from member_scores s where s.model = 'repurchase' and s.as_of = ?
            ),
            ranked as (select *, rank() over (order by probability) as low,
                count(*) over (partition by probability) as ties from labelled)
            select (sum(low + (ties - 1) / 2.0) filter (where label)
                    - count(*) filter (where label) * (count(*) filter (where label) + 1) / 2.0)
                / (count(*) filter (where label) * count(*) filter (where not label))
            from ranked
            """,
            [day],
        ).fetchall()
    return float(auc)


def test_monitoring_realized_auc_drift_alarm_and_paused_segments(ml_workspace, monkeypatch):
    settings = ml_workspace
    score(settings, "repurchase", EVALUATED)
    for model in ("repurchase", "churn", "conversion"):
        score(settings, model, SCORE_DAY)

    # two weeks after its evaluation population, the champion is fine: no warning at all
    calm = monitor(settings, "repurchase", SCORE_DAY)
    assert calm.status == "ok", calm.reasons
    realized = {c.name: c for c in calm.checks if c.kind == "realized"}
    assert set(realized) == {f"{m}@{EVALUATED}" for m in ("auc", "brier", "ece")}  # the only matured date
    assert abs(realized[f"auc@{EVALUATED}"].value - _independent_auc(settings, EVALUATED)) < 1e-9

    # a unit change upstream (spend in fen instead of yuan) on the scoring day
    with duckdb.connect(str(settings.warehouse_path)) as con:
        con.execute(
            "update member_features set spend_total = spend_total * 100 where as_of_date = ?", [SCORE_DAY]
        )
    score(settings, "repurchase", SCORE_DAY)
    alarm = monitor(settings, "repurchase", SCORE_DAY)
    assert alarm.status == "critical"
    critical = {c.name for c in alarm.checks if c.level == "critical"}
    assert "spend_total" in critical and alarm.reasons[-1].startswith("retrain")

    # the next plan leaves out every segment that uses the repurchase model, and its gate still passes
    segments = load_segments()
    uses = {s.name for s in segments if "repurchase" in s.models}
    assert uses  # the library's replenishment coupons rank by it
    planned = plan(settings, SCORE_DAY, datetime.fromisoformat(f"{SCORE_DAY}T10:00:00+08:00"))
    assert set(planned.paused) == uses
    assert uses.isdisjoint(planned.frame["segment"].unique().to_list())
    assert planned.frame.height > 0  # the other segments are planned as usual
    write_memberships(settings, planned)
    assert gate_warehouse(settings, SCORE_DAY, gate="segments").ok

    # the command an ML engineer runs says so and exits 1
    monkeypatch.setenv("MEMBERFLOW_HOME", str(settings.home))
    monkeypatch.setenv("MEMBERFLOW_ID_KEY", TEST_ID_KEY)
    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(
        app, ["models", "monitor", "--model", "repurchase", "--as-of", str(SCORE_DAY)]
    )
    assert result.exit_code == 1, result.output
    assert "critical" in result.output and "spend_total" in result.output
