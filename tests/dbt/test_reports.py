"""The dashboards' report models on the business sample: every number equals an independent query over the
staging and core tables (written another way: day by day, member by member), and on this generated world
the seeds' funnel and check-in rates land in the ranges the seeds report."""

from __future__ import annotations

import math
from datetime import timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tests.support import query


def share(numerator, denominator, digits: int = 4):
    """The reports' rounding of a share: half away from zero on the decimal value, null on an empty base."""
    if not denominator:
        return None
    scaled = numerator * 10**digits / denominator
    return math.floor(scaled + 0.5) / 10**digits


def last_day(built):
    return query(built, "select max(activity_date) as d from int_member_activity_days")["d"][0]


def same(report: pl.DataFrame, expected: pl.DataFrame, key: list[str]) -> None:
    columns = expected.columns
    ordered = report.select(columns).sort(key)
    assert_frame_equal(ordered, expected.sort(key), check_dtypes=False, check_exact=False, abs_tol=1e-9)


@pytest.fixture(scope="module")
def day(built):
    observed = query(built, "select observed_through from int_report_period")["observed_through"]
    assert observed.to_list() == [last_day(built)]
    return observed[0]


def participant_days(day) -> str:
    """Every participant's camp days up to ``day``, one row per day, with whether they checked in on it."""
    return f"""
        with ev as (select * from stg_wecom__group_events where event_date <= date '{day}'),
        joined as (
            select chat_id, external_userid,
                coalesce(min(event_date) filter (where event_type = 'join'), min(event_date)) as joined
            from ev group by chat_id, external_userid
        ),
        spans as (
            select j.*,
                (select min(e.event_date) from ev e where e.chat_id = j.chat_id
                    and e.external_userid = j.external_userid and e.event_type = 'leave'
                    and e.event_date >= j.joined) as left_on
            from joined j
        ),
        days as (
            select s.chat_id, s.external_userid, s.joined, s.left_on, cast(g.day as date) as day
            from spans s, lateral (
                select unnest(generate_series(
                    cast(s.joined as timestamp),
                    cast(least(s.joined + 28, coalesce(s.left_on, s.joined + 28), date '{day}' + 1)
                        as timestamp) - interval 1 day,
                    interval 1 day)) as day
            ) g
        )
        select days.*, exists (
            select 1 from ev where ev.chat_id = days.chat_id and ev.external_userid = days.external_userid
                and ev.event_type = 'checkin' and ev.event_date = days.day
        ) as checked_in
        from days
    """


def test_checkin_camps_and_days_count_each_participants_camp_days(built, day):
    days = query(built, participant_days(day))
    spans = query(
        built,
        f"""
        with ev as (select * from stg_wecom__group_events where event_date <= date '{day}')
        select chat_id, external_userid,
            coalesce(min(event_date) filter (where event_type = 'join'), min(event_date)) as joined
        from ev group by chat_id, external_userid
        """,
    )
    checkins = query(
        built,
        f"select distinct chat_id, external_userid, event_date from stg_wecom__group_events "
        f"where event_type = 'checkin' and event_date <= date '{day}'",
    )
    leaves = query(
        built,
        f"select chat_id, external_userid, event_date from stg_wecom__group_events "
        f"where event_type = 'leave' and event_date <= date '{day}'",
    )

    def checked_in_within(dates: set, joined, left, n: int) -> int:
        end = joined + timedelta(days=n) if left is None else min(joined + timedelta(days=n), left)
        return sum(1 for d in dates if joined <= d < end)

    rows = []
    for chat, contact, joined in spans.iter_rows():
        own = (pl.col("chat_id") == chat) & (pl.col("external_userid") == contact)
        mine = days.filter(own)
        left = leaves.filter(own & (pl.col("event_date") >= joined))["event_date"].min()
        dates = set(checkins.filter(own)["event_date"])
        past21 = (day - joined).days >= 20
        past28 = (day - joined).days >= 27
        rows.append(
            {
                "chat_id": chat,
                "enrolled": 1,
                "still_in_group": int(left is None),
                "camp_days": mine.height,
                "checkin_days": int(mine["checked_in"].sum()),
                "eligible_21d": int(past21),
                "completed_21d": int(past21 and checked_in_within(dates, joined, left, 21) >= 17),
                "eligible_28d": int(past28),
                "completed_28d": int(past28 and checked_in_within(dates, joined, left, 28) >= 23),
            }
        )
    camps = pl.DataFrame(rows).group_by("chat_id").sum()
    camps = camps.with_columns(
        daily_checkin_rate=pl.struct("checkin_days", "camp_days").map_elements(
            lambda r: share(r["checkin_days"], r["camp_days"]), return_dtype=pl.Float64
        ),
        completion_21d=pl.struct("completed_21d", "eligible_21d").map_elements(
            lambda r: share(r["completed_21d"], r["eligible_21d"]), return_dtype=pl.Float64
        ),
    )
    report = query(built, "select * from report_checkin_camps")
    assert report.height == camps.height > 20
    same(report, camps, ["chat_id"])

    daily = (
        days.group_by("day")
        .agg(in_camp=pl.len(), checked_in=pl.col("checked_in").sum())
        .with_columns(
            checkin_rate=pl.struct("checked_in", "in_camp").map_elements(
                lambda r: share(r["checked_in"], r["in_camp"]), return_dtype=pl.Float64
            )
        )
    )
    report_daily = query(built, "select * from report_checkin_daily")
    same(report_daily, daily.filter(pl.col("day").is_in(report_daily["day"].implode())), ["day"])
    assert report_daily.height >= 50


def test_livestream_sessions_count_viewers_and_their_orders_within_seven_days(built, day):
    expected = query(
        built,
        f"""
        with v as (select * from stg_livestream__views where view_date <= date '{day}'),
        s as (
            select platform, session_id, min(view_date) as session_date,
                count(distinct viewer_key) as viewers, count(*) as views,
                sum(product_clicks) as product_clicks
            from v group by platform, session_id
        ),
        watchers as (
            select distinct v.platform, v.session_id, m.member_id
            from v join member_identifiers m on m.id_type = 'openid' and m.id_value = v.viewer_key
        ),
        bought as (
            select w.platform, w.session_id, o.member_id, o.order_key, o.net_amount_cny
            from watchers w
            join s using (platform, session_id)
            join fct_orders o on o.member_id = w.member_id and o.status != 'cancelled'
                and date_diff('day', s.session_date, o.order_date) between 0 and 6
        )
        select s.*,
            (select count(distinct member_id) from bought b
                where b.platform = s.platform and b.session_id = s.session_id) as buyers_7d,
            (select count(distinct order_key) from bought b
                where b.platform = s.platform and b.session_id = s.session_id) as orders_7d,
            coalesce((select sum(net_amount_cny) from bought b
                where b.platform = s.platform and b.session_id = s.session_id), 0) as revenue_7d_cny,
            s.session_date + 6 <= date '{day}' as window_closed
        from s
        """,
    )
    report = query(built, "select * from report_livestream_sessions")
    assert report.height == expected.height > 10
    assert expected["buyers_7d"].sum() > 0  # viewers do buy: the check compares real counts
    same(report, expected, ["platform", "session_id"])


def test_first_order_conversion_counts_prospects_whose_window_is_over(built, day):
    members = query(
        built,
        """
        select m.member_id, m.acquisition_channel, coalesce(m.acquisition_code, 'none') as source_code,
            m.first_seen_on,
            (select min(o.order_date) from fct_orders o
                where o.member_id = m.member_id and o.status != 'cancelled') as first_order_on
        from dim_member m
        """,
    )
    d = members.with_columns(
        gap=(pl.col("first_order_on") - pl.col("first_seen_on")).dt.total_days(),
        seen=(pl.lit(day) - pl.col("first_seen_on")).dt.total_days(),
    ).filter(pl.col("seen") >= 0)
    prospect = pl.col("gap").is_null() | (pl.col("gap") > 0)
    expected = (
        d.group_by("acquisition_channel", "source_code")
        .agg(
            members=pl.len(),
            prospects=prospect.sum(),
            prospects_7d=(prospect & (pl.col("seen") >= 7)).sum(),
            converted_7d=(pl.col("gap").is_between(1, 7) & (pl.col("seen") >= 7)).sum(),
            prospects_15d=(prospect & (pl.col("seen") >= 15)).sum(),
            converted_15d=(pl.col("gap").is_between(1, 15) & (pl.col("seen") >= 15)).sum(),
        )
        .with_columns(
            conversion_15d=pl.struct("converted_15d", "prospects_15d").map_elements(
                lambda r: share(r["converted_15d"], r["prospects_15d"]), return_dtype=pl.Float64
            )
        )
    )
    report = query(built, "select * from report_first_order_conversion")
    same(report, expected, ["acquisition_channel", "source_code"])


def test_repurchase_counts_buyers_whose_cycle_window_is_over(built, day):
    lines = query(built, "select member_id, category, order_date from int_member_order_lines").filter(
        pl.col("order_date") <= day
    )
    catalog = query(built, "select category, replenishment_days from category_catalog where not is_device")
    cycles = dict(catalog.iter_rows())
    rows = []
    for category, cycle in cycles.items():
        window = math.ceil(cycle * 1.5)
        bought = lines.filter(pl.col("category") == category)
        dates = bought.group_by("member_id").agg(pl.col("order_date").unique())
        eligible = repurchased = 0
        gaps = []
        for _, days_bought in dates.iter_rows():
            first = min(days_bought)
            later = sorted(d for d in days_bought if d > first)
            if (day - first).days < window:
                continue
            eligible += 1
            if later and (later[0] - first).days <= window:
                repurchased += 1
                gaps.append((later[0] - first).days)
        rows.append(
            {
                "category": category,
                "buyers": dates.height,
                "eligible": eligible,
                "repurchased": repurchased,
                "repurchase_rate": share(repurchased, eligible),
                "median_days_to_repurchase": float(pl.Series(gaps).median()) if gaps else None,
            }
        )
    expected = pl.DataFrame(rows).filter(pl.col("buyers") > 0)
    report = query(built, "select * from report_repurchase_by_category")
    assert report["eligible"].sum() > 100
    same(report, expected, ["category"])


def test_lifecycle_migration_counts_each_members_stage_a_week_apart(built, day):
    expected = query(
        built,
        f"""
        with weeks as (
            select cast(date '{day}' - cast(7 * k as integer) as date) as week_ending from range(8) t(k)
            where date '{day}' - cast(7 * k + 7 as integer)
                >= (select min(valid_from) from int_member_lifecycle_ranges)
        ),
        stage_on as (
            select w.week_ending, r.member_id,
                max(r.stage) filter (where r.valid_from <= w.week_ending
                    and (r.valid_to is null or r.valid_to > w.week_ending)) as to_stage,
                max(r.stage) filter (where r.valid_from <= w.week_ending - 7
                    and (r.valid_to is null or r.valid_to > w.week_ending - 7)) as from_stage
            from weeks w cross join int_member_lifecycle_ranges r
            group by w.week_ending, r.member_id
        )
        select week_ending, coalesce(from_stage, 'none') as from_stage, to_stage, count(*) as members
        from stage_on where to_stage is not null
        group by all
        """,
    )
    report = query(built, "select * from report_lifecycle_migration")
    assert report["week_ending"].n_unique() == 8
    same(report, expected, ["week_ending", "from_stage", "to_stage"])
    # a week's rows add up to the members seen by its end
    seen = query(
        built,
        f"select count(*) as n from dim_member where first_seen_on <= date '{day}'",
    )["n"][0]
    assert report.filter(pl.col("week_ending") == day)["members"].sum() == seen


def test_channel_economics_read_the_landed_spend_file(built, day):
    spend_file = built.landing_dir / "marketing" / "costs" / "dt=*" / "part-0.parquet"
    expected = query(
        built,
        f"""
        with costs as (
            select cost_id, arg_max(channel, updated_at) as channel,
                arg_max(spend_date, updated_at) as spend_date, arg_max(amount_cny, updated_at) as amount_cny
            from read_parquet('{spend_file}') group by cost_id
        ),
        start as (select min(spend_date) as first from costs),
        spend as (
            select channel as acquisition_channel, sum(amount_cny) as spend_cny from costs
            where spend_date <= date '{day}' group by channel
        ),
        newcomers as (
            select m.member_id, m.acquisition_channel,
                (select count(*) from fct_orders o where o.member_id = m.member_id and o.status != 'cancelled'
                    and o.order_date <= date '{day}') as orders,
                (select coalesce(sum(o.net_amount_cny), 0) from fct_orders o where o.member_id = m.member_id
                    and o.order_date <= date '{day}') as revenue
            from dim_member m, start
            where m.first_seen_on between start.first and date '{day}'
        )
        select s.acquisition_channel, s.spend_cny, count(n.member_id) as new_members,
            count(n.member_id) filter (where n.orders > 0) as new_customers, sum(n.revenue) as net_revenue_cny
        from spend s left join newcomers n using (acquisition_channel)
        group by s.acquisition_channel, s.spend_cny
        """,
    )
    report = query(built, "select * from report_channel_economics")
    same(report, expected, ["acquisition_channel"])
    for row in report.iter_rows(named=True):
        assert row["cac_cny"] == share(float(row["spend_cny"]), row["new_customers"], 2)
        assert row["ltv_to_cac"] == share(float(row["net_revenue_cny"]), float(row["spend_cny"]), 2)
    # the landing kept every channel's spend and quarantined the broken lines with a reason
    assert set(report["acquisition_channel"]) == {
        "wecom", "miniprogram", "livestream", "store_pos", "ecommerce", "insurance"
    }  # fmt: skip
    reasons = query(built, "select distinct reason from quarantine where channel = 'marketing'")["reason"]
    assert len(reasons) >= 1


def test_the_generated_world_converts_and_checks_in_like_the_seeds(built):
    """The seeds see 15-30 % of prospects place a first order within 15 days, and camp members check in on
    60-90 % of their days; the sample world, measured through the warehouse as ops would, does too."""
    funnel = query(
        built, "select sum(converted_15d) / sum(prospects_15d) as rate, sum(prospects_15d) as n "
        "from report_first_order_conversion"
    )  # fmt: skip
    camps = query(built, "select sum(checkin_days) / sum(camp_days) as rate from report_checkin_camps")
    assert funnel["n"][0] > 1000
    assert 0.15 <= funnel["rate"][0] <= 0.30, funnel
    assert 0.60 <= camps["rate"][0] <= 0.90, camps
