"""Warehouse gates: suites over tables dbt built, run after the build and before anything uses them.

A gate is a named group of suites (``marts`` now; the scoring and segment issues add ``scores`` and
``segments``). A suite is a function registered with ``@warehouse_suite(gate, table)`` that gets a read-only
DuckDB connection and returns the checks plus the frame to validate. Frames are built in DuckDB with only
the columns a check needs, or as aggregates (tags), so a million-member warehouse validates in bounded
memory. Adding a suite is one decorated function; the gate, the results, the Data Docs, the CLI exit code
and the DAG task pick it up.

When every critical check of a gate passes, the gate is *published*: ``quality/published/<gate>.json`` names
the date. A new build clears it first; training, scoring and delivery are to call ``require_published``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import pandas as pd
import polars as pl

from expectations.config import QualityConfig
from expectations.gx import load as load_gx
from expectations.runner import (
    GateResult,
    QualityGateError,
    Suite,
    build_data_docs,
    gate_result,
    results_dir,
    validate,
)
from memberflow.core.settings import Settings
from memberflow.core.vocab import ACQUISITION_CHANNELS, ID_TYPES, MODELS, TAG_VALUES
from memberflow.outreach.run import paused_segments
from memberflow.outreach.suppression import BEFORE_HOLDOUT, REASONS, STATUSES
from memberflow.segments import kept_profiles, load_segments, rule_expr, score_pool_expr
from memberflow.warehouse import clear_published, open_warehouse, publish, table_names
from ml.datasets import POPULATIONS


@dataclass
class SuiteContext:
    settings: Settings
    config: QualityConfig
    con: object  # a read-only duckdb connection to the warehouse
    gate: str
    day: date

    def suite(self, subject: str, sample_columns: tuple[str, ...] = ()) -> Suite:
        return Suite(self.gate, subject, self.config, sample_columns)


SuiteBuilder = Callable[[SuiteContext], tuple[Suite, object]]
SUITES: dict[str, dict[str, SuiteBuilder]] = {}


def warehouse_suite(gate: str, table: str) -> Callable[[SuiteBuilder], SuiteBuilder]:
    """Register ``fn(ctx) -> (suite, pandas frame)`` as the suite of ``table`` in ``gate``."""

    def register(fn: SuiteBuilder) -> SuiteBuilder:
        SUITES.setdefault(gate, {})[table] = fn
        return fn

    return register


def _expectations():
    gx = load_gx()

    return gx.expectations


def _start(value: str | date) -> datetime:
    return datetime.combine(date.fromisoformat(str(value)), time())


def _add_member_key(suite: Suite, about: str) -> None:
    e = _expectations()
    suite.add(
        "member_id_key",
        about,
        lambda s: [
            e.ExpectColumnValuesToNotBeNull(column="member_id"),
            e.ExpectColumnValuesToBeUnique(column="member_id"),
        ],
    )


# --- the marts gate ----------------------------------------------------------------------------------------


@warehouse_suite("marts", "dim_member")
def dim_member_suite(ctx: SuiteContext):
    e = _expectations()
    suite = ctx.suite("dim_member", ("member_id",))
    frame = ctx.con.sql(
        "select member_id, acquisition_channel, cast(first_seen_on as timestamp) as first_seen_on, "
        "identifier_count from dim_member"
    ).df()
    _add_member_key(suite, "member_id present and unique")
    suite.add(
        "enum_values",
        f"acquisition_channel in {', '.join(ACQUISITION_CHANNELS)}",
        lambda s: [
            e.ExpectColumnValuesToNotBeNull(column="acquisition_channel"),
            e.ExpectColumnValuesToBeInSet(column="acquisition_channel", value_set=list(ACQUISITION_CHANNELS)),
        ],
    )
    suite.add(
        "dates_in_range",
        f"first_seen_on between the business start and {ctx.day.isoformat()}",
        lambda s: e.ExpectColumnValuesToBeBetween(
            column="first_seen_on", min_value=_start(s["business_start"]), max_value=_start(ctx.day)
        ),
    )
    suite.add(
        "identifier_count",
        "every member has at least one identifier",
        lambda s: e.ExpectColumnValuesToBeBetween(column="identifier_count", min_value=1),
    )
    _add_member_count(ctx, suite)
    return suite, frame


def _add_member_count(ctx: SuiteContext, suite: Suite) -> None:
    settings = suite.settings("member_count_change")
    if settings["severity"] == "off":
        return
    previous = last_passing(ctx.settings, ctx.gate, ctx.day, int(settings["within_days"]))
    if previous is None:
        suite.note(
            f"member count not compared: no passing {ctx.gate} gate in the "
            f"{settings['within_days']} days before"
        )
        return
    day, members = previous
    if members < int(settings["min_members"]):
        suite.note(
            f"member count not compared: {members:,} members on {day} is below {settings['min_members']:,}"
        )
        return
    suite.add_row_count_band("member_count_change", members, f"the {members:,} members of {day}")


@warehouse_suite("marts", "member_identifiers")
def member_identifiers_suite(ctx: SuiteContext):
    e = _expectations()
    suite = ctx.suite("member_identifiers", ("id_type", "id_value", "member_id"))
    frame = ctx.con.sql("select id_type, id_value, member_id from member_identifiers").df()
    suite.add(
        "member_id_key",
        "every identifier has a member",
        lambda s: e.ExpectColumnValuesToNotBeNull(column="member_id"),
    )
    suite.add(
        "identifier_one_member",
        "each identifier (id_type, id_value) maps to exactly one member",
        lambda s: e.ExpectCompoundColumnsToBeUnique(column_list=["id_type", "id_value"]),
    )
    suite.add(
        "enum_values",
        f"id_type in {', '.join(ID_TYPES)}",
        lambda s: e.ExpectColumnValuesToBeInSet(column="id_type", value_set=list(ID_TYPES)),
    )
    return suite, frame


def allowed_tags(con) -> list[str]:
    interests = [
        r[0]
        for r in con.sql(
            "select distinct interest from category_catalog where interest is not null"
        ).fetchall()
    ]
    vocab = {**TAG_VALUES, "interest": tuple(interests), "acquisition_channel": ACQUISITION_CHANNELS}
    return sorted(f"{group}:{value}" for group, values in vocab.items() for value in values)


@warehouse_suite("marts", "member_tags")
def member_tags_suite(ctx: SuiteContext):
    """Validated as one row per (tag_group, tag_value): the vocabulary matters, not 7 rows a member."""
    e = _expectations()
    suite = ctx.suite("member_tags", ("tag", "rows", "members"))
    frame = ctx.con.sql(
        "select tag_group || ':' || tag_value as tag, count(*) as rows, "
        "count(distinct member_id) as members, "
        "count(*) filter (where member_id is null) as missing_member, "
        "count(*) filter (where valid_to is not null and valid_to <= valid_from) as bad_ranges, "
        "count(*) - count(distinct (member_id, valid_from)) as duplicate_rows "
        "from member_tags group by all order by tag"
    ).df()
    allowed = allowed_tags(ctx.con)
    suite.add(
        "enum_values",
        "every tag value is in its group's vocabulary",
        lambda s: e.ExpectColumnValuesToBeInSet(column="tag", value_set=allowed),
    )
    suite.add(
        "member_id_key",
        "every tag row has a member",
        lambda s: e.ExpectColumnValuesToBeBetween(column="missing_member", max_value=0),
    )
    suite.add(
        "tag_ranges",
        "valid_to after valid_from",
        lambda s: e.ExpectColumnValuesToBeBetween(column="bad_ranges", max_value=0),
    )
    suite.add(
        "tag_rows_unique",
        "one row per member, tag and valid_from",
        lambda s: e.ExpectColumnValuesToBeBetween(column="duplicate_rows", max_value=0),
    )
    return suite, frame


RATE_COLUMNS = ("checkin_rate_7d", "checkin_rate_prev_21d")


@warehouse_suite("marts", "member_features")
def member_features_suite(ctx: SuiteContext):
    """The newest as-of date's rows: what scoring reads."""
    e = _expectations()
    suite = ctx.suite("member_features", ("member_id", "as_of_date"))
    columns = [r[0] for r in ctx.con.sql("describe member_features").fetchall()]
    non_negative = [
        c
        for c in columns
        if c.startswith(
            ("orders_", "spend_", "days_since_", "purchase_gap_", "live_sessions", "mp_", "article_")
        )
        or c.endswith(("_7d", "_21d", "_30d"))
        or c in ("tenure_days", "channels_used", "checkin_streak", "avg_order_value", "baby_age_months")
    ]
    non_negative = [c for c in non_negative if c not in RATE_COLUMNS]
    nulls = suite.settings("feature_nulls")["max_null_share"]
    wanted = list(
        dict.fromkeys(
            [
                "member_id",
                *non_negative,
                *RATE_COLUMNS,
                *nulls,
                "lifecycle_stage",
                "funnel_stage",
                "value_tier",
            ]
        )
    )
    select = ", ".join(
        f'cast("{c}" as double) as "{c}"' if c.startswith("spend_") else f'"{c}"' for c in wanted
    )
    frame = ctx.con.sql(
        f"select cast(as_of_date as varchar) as as_of_date, {select} from member_features "
        "where as_of_date = (select max(as_of_date) from member_features)"
    ).df()
    _add_member_key(suite, "member_id present and unique for the as-of date")
    for column in non_negative:
        suite.add(
            "feature_ranges",
            f"{column} is not negative",
            lambda s, c=column: e.ExpectColumnValuesToBeBetween(column=c, min_value=0),
        )
    for column in RATE_COLUMNS:
        suite.add(
            "feature_ranges",
            f"{column} is a share between 0 and 1",
            lambda s, c=column: e.ExpectColumnValuesToBeBetween(column=c, min_value=0, max_value=1),
        )
    for group in ("lifecycle", "funnel_stage", "value_tier"):
        column = "lifecycle_stage" if group == "lifecycle" else group
        suite.add(
            "enum_values",
            f"{column} in {', '.join(TAG_VALUES[group])}",
            lambda s, c=column, g=group: e.ExpectColumnValuesToBeInSet(
                column=c, value_set=list(TAG_VALUES[g])
            ),
        )
    for column, share in nulls.items():
        suite.add(
            "feature_nulls",
            f"{column} missing for at most {float(share):.0%} of members",
            lambda s, c=column, m=1.0 - float(share): e.ExpectColumnValuesToNotBeNull(column=c, mostly=m),
        )
    return suite, frame


# --- the scores gate --------------------------------------------------------------------------------------


def _scores_suite(model: str) -> SuiteBuilder:
    def build(ctx: SuiteContext):
        e = _expectations()
        suite = ctx.suite(f"member_scores.{model}", ("member_id",))
        tables = table_names(ctx.con)
        scored = 0
        if "member_scores" in tables:
            scored = ctx.con.execute(
                "select count(*) from member_scores where model = ? and as_of = ?", [model, ctx.day]
            ).fetchall()[0][0]
        if not scored:
            suite.note(f"{model} was not scored for {ctx.day} (no champion yet)")
            return suite, pd.DataFrame()
        # Population members without a score have a null probability; scores of members outside the
        # population have in_population = false.
        frame = ctx.con.execute(
            f"""
            with population as (
                select f.member_id from member_features f where f.as_of_date = $day and {POPULATIONS[model]}
            ),
            scores as (select * from member_scores where model = $model and as_of = $day)
            select
                coalesce(scores.member_id, population.member_id) as member_id,
                scores.probability,
                scores.decile,
                population.member_id is not null as in_population,
                case when scores.decile is null then 0.1
                    else count(*) over (partition by scores.decile) / (select count(*) from scores)
                end as decile_share,
                (select count(*) from scores) as scored
            from scores
            full outer join population on scores.member_id = population.member_id
            """,
            {"day": ctx.day, "model": model},
        ).df()
        _add_member_key(suite, "one score per member")
        suite.add(
            "score_ranges",
            "probability in [0, 1] and decile 1-10",
            lambda s: [
                e.ExpectColumnValuesToBeBetween(column="probability", min_value=0, max_value=1),
                e.ExpectColumnValuesToBeBetween(column="decile", min_value=1, max_value=10),
            ],
        )
        tolerance = float(suite.settings("deciles_balanced")["tolerance"]) + 1.0 / max(scored, 1)
        suite.add(
            "deciles_balanced",
            f"each decile holds 10% ± {tolerance:.1%} of the scored members",
            lambda s: e.ExpectColumnValuesToBeBetween(
                column="decile_share", min_value=0.1 - tolerance, max_value=0.1 + tolerance
            ),
        )
        suite.add(
            "members_scored",
            "every member of the population has a score, and nobody else",
            lambda s: [
                e.ExpectColumnValuesToNotBeNull(column="probability"),
                e.ExpectColumnValuesToBeInSet(column="in_population", value_set=[True]),
            ],
        )
        return suite, frame

    return build


for _model in MODELS:
    warehouse_suite("scores", f"member_scores.{_model}")(_scores_suite(_model))


# --- the segments gate ------------------------------------------------------------------------------------


@warehouse_suite("segments", "segment_memberships")
def segment_memberships_suite(ctx: SuiteContext):
    """The day's segment plan: one segment per member, caps kept, holdouts near their share, nobody who
    opted out is sent, and the segments together do not reach an implausible share of the members."""
    e = _expectations()
    suite = ctx.suite("segment_memberships", ("member_id",))
    tables = table_names(ctx.con)
    if "segment_memberships" not in tables:
        suite.note(f"no segment plan for {ctx.day} (run `memberflow deliver` or the deliver_segments DAG)")
        return suite, pd.DataFrame()
    segments = pd.DataFrame(
        [(s.name, s.daily_cap, s.holdout) for s in load_segments()],
        columns=["segment", "daily_cap", "holdout_share"],
    )
    frame = ctx.con.execute(
        """
        with plan as (select * from segment_memberships where as_of = $day),
        per_segment as (
            select segment,
                count(*) filter (where status in ('send', 'already_sent')) as sending,
                count(*) filter (where status = 'holdout') as held,
                count(*) filter (where status != 'suppressed'
                    or not list_contains($before_holdout, reason)) as eligible
            from plan group by segment
        )
        select plan.member_id, plan.segment, plan.status, plan.reason,
            per_segment.sending, per_segment.held, per_segment.eligible,
            plan.status = 'send' and coalesce(dim_member.marketing_opt_out, false) as sent_opted_out,
            (select count(*) from plan where status in ('send', 'already_sent'))
                / greatest((select count(*) from dim_member), 1) as sending_share
        from plan
        inner join per_segment using (segment)
        left join dim_member using (member_id)
        """,
        {"day": ctx.day, "before_holdout": list(BEFORE_HOLDOUT)},
    ).df()
    frame = frame.merge(segments, on="segment", how="left")
    frame["cap_headroom"] = frame["daily_cap"].fillna(0) - frame["sending"]
    p = frame["holdout_share"].fillna(0.0)
    n = frame["eligible"].clip(lower=1)
    frame["holdout_deviation"] = (frame["held"] / n - p).abs() - (4 * (p * (1 - p) / n) ** 0.5 + 1 / n)
    _add_member_key(suite, "one segment per member and day")
    suite.add(
        "statuses_known",
        "status and suppression reason from the known vocabulary; every suppression has a reason",
        lambda s: [
            e.ExpectColumnValuesToBeInSet(column="status", value_set=list(STATUSES)),
            e.ExpectColumnValuesToBeInSet(column="reason", value_set=[*REASONS, None]),
            e.ExpectColumnValuesToNotBeNull(column="daily_cap"),
        ],
    )
    suite.add(
        "within_caps",
        "no segment sends more than its daily cap",
        lambda s: e.ExpectColumnValuesToBeBetween(column="cap_headroom", min_value=0),
    )
    suite.add(
        "no_opt_out_sent",
        "nobody with a marketing opt-out on record is sent",
        lambda s: e.ExpectColumnValuesToBeInSet(column="sent_opted_out", value_set=[False]),
    )
    suite.add(
        "holdout_share",
        "each segment's holdout within 4 standard errors of its configured share",
        lambda s: e.ExpectColumnValuesToBeBetween(column="holdout_deviation", max_value=0),
    )
    max_share = float(suite.settings("sending_share")["max_share"])
    suite.add(
        "sending_share",
        f"the segments together send to at most {max_share:.0%} of the members in a day",
        lambda s: e.ExpectColumnValuesToBeBetween(column="sending_share", max_value=max_share),
    )
    return suite, frame


def score_end_rows(read_profiles: Callable[[], pl.DataFrame], segments, members_of) -> list[dict]:
    """Per segment and model its rules select on: the mean probability of the segment's members beside that
    of the members its score conditions turned away (they met every other condition of the rule), and of
    everyone the model scored, among the day's profiles. ``read_profiles()`` returns them
    (segments.member_profiles or kept_profiles) and is called only when some segment selects on a score.
    ``members_of(segment name)``: the member ids to judge (the day's plan, or what receivers applied). A
    score condition keeps the top of a score (or, for ``direction: low``, the bottom), so its members sit
    above (below) the ones turned away, whatever the population looks like."""
    scored = [s for s in segments if s.score_fields]
    if not scored:
        return []
    profiles = read_profiles()
    rows = []
    for seg in scored:
        judged = set(members_of(seg.name))
        pool = profiles.filter(score_pool_expr(seg))
        turned_away = pool.filter(~rule_expr(seg))
        for model in seg.score_models:
            column = f"{model}_probability"
            chosen = pool.filter(pl.col("member_id").is_in(list(judged)))[column].drop_nulls()
            away = turned_away[column].drop_nulls()
            population = profiles[column].drop_nulls()
            sign = -1.0 if seg.direction == "low" else 1.0
            gap = sign * (chosen.mean() - away.mean()) if len(chosen) and len(away) else None
            rows.append(
                {"segment": seg.name, "model": model, "direction": seg.direction, "members": len(chosen),
                 "segment_mean": chosen.mean() if len(chosen) else None, "turned_away": len(away),
                 "turned_away_mean": away.mean() if len(away) else None,
                 "population_mean": population.mean() if len(population) else None, "score_gap": gap}
            )  # fmt: skip
    return rows


@warehouse_suite("segments", "segment_outcomes")
def segment_outcomes_suite(ctx: SuiteContext):
    """Whether the day's segments hold the members their rules mean, one row per segment (and model):

    - ``score_end``: a segment whose rule selects on a model's score holds members whose mean probability
      is above that of the members the score conditions turned away (members who met every other
      condition of the rule); below, for ``direction: low``. A rule written backwards, or deciles numbered
      the other way, fails here whatever the mechanics say. Compared with the ones turned away rather than
      with everyone scored: the members a segment is for can sit below the population as a whole (measured
      on the demo: high-value members with a WeCom contact have a churn probability of 9-56 %, while half
      of the churn model's population is over 63 %), and no rule on them could pass that comparison;
    - ``segment_size_band``: the segment's size (members assigned, all statuses) within a band around its
      median over the recent days with a plan, so a rule that suddenly picks ten times as many members, or
      none, stops the delivery."""
    e = _expectations()
    suite = ctx.suite(
        "segment_outcomes",
        ("segment", "model", "members", "segment_mean", "turned_away_mean", "size", "recent_median"),
    )
    tables = table_names(ctx.con)
    if "segment_memberships" not in tables:
        suite.note(f"no segment plan for {ctx.day} (run `memberflow deliver` or the deliver_segments DAG)")
        return suite, pd.DataFrame()
    segments = load_segments()
    paused = paused_segments(ctx.settings, ctx.day, segments)
    for name, why in paused.items():
        suite.note(f"{name} is not planned today: {why}")
    segments = [s for s in segments if s.name not in paused]
    band = suite.settings("segment_size_band")
    window, min_days = int(band["window_days"]), int(band["min_days"])
    sizes = ctx.con.execute(
        "select segment, as_of, count(*) as size from segment_memberships "
        "where as_of between ? and ? group by all",
        [ctx.day - timedelta(days=window), ctx.day],
    ).df()
    today = sizes[sizes["as_of"] == pd.Timestamp(ctx.day)].set_index("segment")["size"]
    recent = sizes[sizes["as_of"] < pd.Timestamp(ctx.day)]
    days = recent["as_of"].unique()
    plan_days = len(days)
    by_segment = {}
    for seg in segments:
        history = recent[recent["segment"] == seg.name].set_index("as_of")["size"]
        # a day with a plan but none of this segment's members counts as 0
        median = float(history.reindex(days, fill_value=0).median()) if plan_days else None
        size = int(today.get(seg.name, 0))
        row = {"segment": seg.name, "size": size, "recent_median": median, "size_deviation": None}
        if plan_days >= min_days:
            slack = 3 * max(median, 1.0) ** 0.5
            low = median * float(band["low"]) - slack
            high = max(median * float(band["high"]), float(band["min_size"])) + slack
            row |= {"size_low": low, "size_high": high, "size_deviation": max(low - size, size - high)}
        by_segment[seg.name] = row
    plan = ctx.con.execute(
        "select segment, list(member_id) from segment_memberships where as_of = ? group by 1", [ctx.day]
    ).fetchall()
    members = dict(plan)
    score_rows = score_end_rows(
        lambda: kept_profiles(ctx.settings, ctx.con, ctx.day), segments, lambda name: members.get(name, [])
    )
    rows = [by_segment[r["segment"]] | r for r in score_rows]
    rows += [row for name, row in by_segment.items() if name not in {r["segment"] for r in score_rows}]
    frame = pd.DataFrame(rows)
    for column in ("score_gap", "size_deviation"):
        frame[column] = frame[column].astype("float64") if column in frame.columns else float("nan")
    suite.add(
        "score_end",
        "each segment that selects on a model's score holds members above the ones its score conditions "
        "turned away, on average (below, for direction: low)",
        lambda s: e.ExpectColumnValuesToBeBetween(column="score_gap", min_value=0, strict_min=True),
    )
    if plan_days >= min_days:
        suite.add(
            "segment_size_band",
            f"each segment's size within {float(band['low']):g}x-{float(band['high']):g}x its median over "
            f"the last {plan_days} days with a plan (± 3 standard errors)",
            lambda s: e.ExpectColumnValuesToBeBetween(column="size_deviation", max_value=0),
        )
    else:
        suite.note(
            f"segment sizes: {plan_days} earlier days with a plan in the last {window}; the band needs "
            f"{min_days}"
        )
    return suite, frame


# --- running a warehouse gate ----------------------------------------------------------------------------


def last_passing(settings: Settings, gate: str, before: date, within_days: int) -> tuple[str, int] | None:
    """(date, dim_member rows) of the latest passing gate in [before - within_days, before], the day itself
    included: a rebuild of the same day is compared with its last passing run."""
    for offset in range(within_days + 1):
        day = before - timedelta(days=offset)
        folder = results_dir(settings, gate, day)
        summary = folder / "_gate.json"
        if summary.exists() and json.loads(summary.read_text())["status"] != "failed":
            members = json.loads((folder / "dim_member.json").read_text())["rows"]
            return day.isoformat(), int(members)
    return None


def gate_warehouse(
    settings: Settings, day: date, gate: str = "marts", config: QualityConfig | None = None
) -> GateResult:
    """Run every suite of ``gate`` on the warehouse for ``day``; publish the gate or raise
    QualityGateError."""
    config = config or QualityConfig.load()
    clear_published(settings, gate)
    results = []
    with open_warehouse(settings) as con:
        ctx = SuiteContext(settings, config, con, gate, day)
        for build in SUITES[gate].values():
            suite, frame = build(ctx)
            results.append(validate(settings, suite, day, frame))
            del frame
    result = gate_result(settings, gate, day, results)
    build_data_docs(settings, gate, [day])
    if not result.ok:
        raise QualityGateError(result)
    publish(settings, gate, day.isoformat(), result.status)
    return result
