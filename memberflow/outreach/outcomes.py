"""Did it work? Uplift of each segment against its holdout, per channel and week (DESIGN §7a).

Reads ``segment_outcomes`` (dbt: one row per membership decision with what the member did in the
decision's outcome window). The unit compared is a member's first decision in a segment in a week (Monday
to Sunday, China dates): members decided again on later days of the week are counted once, from their
first day. Only units whose window has fully landed by the report's date count. The treated arm is every
eligible member not held out (intent to treat: members held back by a cap or cooldown stay in it, so the
comparison is as random as the holdout hash); members suppressed before the holdout was drawn (opted out,
no consent, no address) are in neither arm, nor are decided members whose identifiers have all gone since
(``member_current`` false: no one's outcomes can be counted for them).

Per segment, channel and week: response rate of each arm, absolute uplift (treated minus holdout) with a
95 % interval (Newcombe's hybrid score interval, good for small arms and rates near 0), incremental orders
and net revenue per 1,000 messages sent, and a power note: the smallest uplift the arms can detect and,
when the interval spans 0, the holdout that would detect the uplift seen (two-sided 5 %, 80 % power).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import date
from statistics import NormalDist

import polars as pl
from statsmodels.stats.proportion import confint_proportions_2indep

from memberflow.core.settings import Settings
from memberflow.warehouse import read_warehouse, table_names

MIN_ARM = 20  # fewer members in an arm: no interval (Newcombe's loses its level with a handful)
ALPHA, POWER = 0.05, 0.8  # the power note: a two-sided 5 % test that finds a true uplift 4 times in 5


# What the report and the uplift learner read of each compared unit.
UNIT_COLUMNS = (
    *("as_of", "segment", "channel", "decided_member_id", "member_id", "arm", "sent", "outcome"),
    *("outcome_days", "orders", "spend_cny", "checkins", "opted_out", "responded"),
)


class NoOutcomesError(RuntimeError):
    """The warehouse has no segment_outcomes yet (no build since deliveries began)."""


@dataclass
class UpliftRow:
    segment: str
    channel: str
    week: str  # the Monday the week starts, YYYY-MM-DD
    outcome: str
    outcome_days: int
    treated: int
    holdout: int
    treated_responded: int
    holdout_responded: int
    treated_rate: float | None
    holdout_rate: float | None
    uplift: float | None
    ci_low: float | None
    ci_high: float | None
    verdict: (
        str  # positive (interval above 0), negative (below), unclear (across), too_few (an arm < MIN_ARM)
    )
    sent: int
    incremental_orders_per_1000: float | None
    incremental_revenue_per_1000: float | None
    detectable_uplift: float | None  # the smallest uplift these arm sizes detect (5 % test, 80 % power)
    holdout_needed: int | None  # when unclear: the holdout that would detect the uplift seen (80 % power)
    note: str

    def to_dict(self) -> dict:
        return asdict(self)


def outcomes_report(settings: Settings, as_of: date) -> list[UpliftRow]:
    """``report`` on the workspace's warehouse."""
    with read_warehouse(settings) as con:
        return report(con, as_of)


def _require_outcomes(con) -> None:
    if "segment_outcomes" not in table_names(con):
        raise NoOutcomesError(
            "the warehouse has no segment_outcomes: run `memberflow build` (outcomes are built from the "
            "deliveries' segment memberships)"
        )


def units(con, as_of: date, segment: str | None = None) -> pl.DataFrame:
    """The compared units: each member's first eligible decision per segment and week whose outcome
    window has landed by ``as_of`` (of one segment when given)."""
    _require_outcomes(con)
    return con.sql(
        f"select * from ({UNITS_SQL}) order by segment, week, as_of, member_id",
        params={"as_of": as_of, "segment": segment},
    ).pl()


# Each member's first decision per segment and week among the matured, eligible ones: an aggregate (arg_min)
# in DuckDB, so that a year of decisions at a million members (hundreds of millions of rows) is never
# sorted by a window or held in memory, only its units.
_FIRST = ", ".join(f"{c} := {c}" for c in UNIT_COLUMNS if c not in ("segment", "member_id"))
UNITS_SQL = f"""
    select segment, week, member_id, unnest(first)
    from (
        select segment, cast(date_trunc('week', as_of) as date) as week, member_id,
            arg_min(
                struct_pack({_FIRST}),
                (as_of, decided_member_id)
            ) as first
        from segment_outcomes
        where arm in ('treated', 'holdout') and window_complete and window_end <= $as_of + 1
            and member_current and ($segment is null or segment = $segment)
        group by all
    )
"""


def report(con, as_of: date) -> list[UpliftRow]:
    """One row per segment, channel and week with matured outcomes (see the module docstring); counted in
    DuckDB, so only the counts reach Python."""
    _require_outcomes(con)
    groups = con.sql(
        f"""
        select segment, channel, week, any_value(outcome) as outcome, max(outcome_days) as outcome_days,
            count(*) filter (arm = 'treated') as treated,
            count(*) filter (arm = 'holdout') as holdout,
            count(*) filter (responded and arm = 'treated') as treated_responded,
            count(*) filter (responded and arm = 'holdout') as holdout_responded,
            cast(coalesce(sum(orders) filter (arm = 'treated'), 0) as bigint) as treated_orders,
            cast(coalesce(sum(orders) filter (arm = 'holdout'), 0) as bigint) as holdout_orders,
            coalesce(sum(spend_cny) filter (arm = 'treated'), 0) as treated_spend,
            coalesce(sum(spend_cny) filter (arm = 'holdout'), 0) as holdout_spend,
            count(*) filter (sent and arm = 'treated') as sent
        from ({UNITS_SQL})
        group by all
        order by segment, channel, week
        """,
        params={"as_of": as_of, "segment": None},
    ).pl()
    return [_row(g) for g in groups.iter_rows(named=True)]


def _row(g: dict) -> UpliftRow:
    n1, n0, r1, r0 = g["treated"], g["holdout"], g["treated_responded"], g["holdout_responded"]
    p1 = r1 / n1 if n1 else None
    p0 = r0 / n0 if n0 else None
    uplift = ci_low = ci_high = detectable = None
    per_order = per_revenue = None
    needed = None
    notes = []
    if min(n1, n0) < MIN_ARM:
        verdict = "too_few"
        notes.append(f"{n1:,} treated and {n0:,} held out: too few to compare (at least {MIN_ARM} each)")
    else:
        uplift = p1 - p0
        low, high = confint_proportions_2indep(r1, n1, r0, n0, method="newcomb", compare="diff")
        ci_low, ci_high = float(low), float(high)
        verdict = "positive" if ci_low > 0 else "negative" if ci_high < 0 else "unclear"
        notes.append(
            {"positive": "above 0", "negative": "below 0", "unclear": "not distinguishable from 0"}[verdict]
        )
        detectable = detectable_uplift(p0, n1, n0)
        notes.append(f"these arms detect an uplift of {100 * detectable:.1f} points or more")
        if verdict == "unclear" and uplift != 0:
            needed = holdout_needed(p1, p0, n1)
            notes.append(
                f"a holdout of {needed:,} would detect {100 * uplift:+.1f} points"
                if needed is not None
                else f"no holdout can detect {100 * uplift:+.1f} points beside {n1:,} treated"
            )
        if g["sent"]:
            per_send = 1000 * n1 / g["sent"]  # per 1,000 sends: scale the per-member difference by sends
            per_order = (g["treated_orders"] / n1 - g["holdout_orders"] / n0) * per_send
            per_revenue = (float(g["treated_spend"]) / n1 - float(g["holdout_spend"]) / n0) * per_send
    return UpliftRow(
        segment=g["segment"],
        channel=g["channel"],
        week=g["week"].isoformat(),
        outcome=g["outcome"],
        outcome_days=int(g["outcome_days"]),
        treated=n1,
        holdout=n0,
        treated_responded=r1,
        holdout_responded=r0,
        treated_rate=p1,
        holdout_rate=p0,
        uplift=uplift,
        ci_low=ci_low,
        ci_high=ci_high,
        verdict=verdict,
        sent=g["sent"],
        incremental_orders_per_1000=per_order,
        incremental_revenue_per_1000=per_revenue,
        detectable_uplift=detectable,
        holdout_needed=needed,
        note="; ".join(notes),
    )


# Cohen's h (2·asin√p1 − 2·asin√p0) is normal with standard error √(1/n1 + 1/n0): a two-sided test at ALPHA
# detects h with probability POWER when h ≥ Z_SUM · √(1/n1 + 1/n0).
Z_SUM = NormalDist().inv_cdf(1 - ALPHA / 2) + NormalDist().inv_cdf(POWER)


def detectable_uplift(p0: float, n1: int, n0: int) -> float:
    """The smallest uplift over the holdout's rate these arm sizes detect (two-sided 5 %, 80 % power)."""
    h = Z_SUM * math.sqrt(1 / n1 + 1 / n0)
    base = math.asin(math.sqrt(min(max(p0, 0.0), 1.0)))
    return math.sin(min(base + h / 2, math.pi / 2)) ** 2 - p0


def holdout_needed(p1: float, p0: float, n1: int) -> int | None:
    """Holdout size that would detect the difference between these rates beside ``n1`` treated (two-sided
    5 %, 80 % power); None when no holdout could (the treated arm alone is too small)."""
    h = abs(2 * math.asin(math.sqrt(p1)) - 2 * math.asin(math.sqrt(p0)))
    room = (h / Z_SUM) ** 2 - 1 / n1
    return math.ceil(1 / room) if h > 0 and room > 0 else None


def log_to_mlflow(settings: Settings, as_of: date, rows: list[UpliftRow]) -> str:
    """Record the report as an MLflow run of the ``memberflow-outcomes`` experiment: the rows as
    ``uplift_report.json``, and per segment the newest week's uplift, interval and arm sizes as metrics.
    Returns the run id."""
    import json

    import mlflow

    from ml.registry import connect, experiment_id

    connect(settings)
    newest: dict[str, UpliftRow] = {}
    for r in rows:
        if r.uplift is not None and (r.segment not in newest or r.week > newest[r.segment].week):
            newest[r.segment] = r
    with mlflow.start_run(
        experiment_id=experiment_id(settings, "outcomes"), run_name=f"outcomes {as_of}"
    ) as run:
        mlflow.set_tags({"as_of": as_of.isoformat(), "segment_weeks": str(len(rows))})
        for name, r in newest.items():
            mlflow.log_metrics(
                {
                    f"{name}.uplift": r.uplift,
                    f"{name}.ci_low": r.ci_low,
                    f"{name}.ci_high": r.ci_high,
                    f"{name}.treated": r.treated,
                    f"{name}.holdout": r.holdout,
                }
            )
        mlflow.log_text(
            json.dumps([r.to_dict() for r in rows], ensure_ascii=False, indent=1), "uplift_report.json"
        )
        return run.info.run_id
