-- One row per member and as-of date (int_feature_dates), computed only from what happened strictly
-- before that date: what training (past dates) and scoring (tomorrow) both use.
-- Incremental by as-of date: a run replaces the dates it computes and keeps the others, so training
-- cutoffs and daily scoring dates live side by side. Dates older than feature_retention_days before the
-- newest one are dropped unless this run computed them (training asks for its cutoffs again).
{#- Spark's Parquet tables cannot delete+insert: there the dates computed are deleted by a pre-hook
    (macros/landed.sql, delete_rows) and the new rows appended. -#}
{{ config(
    materialized='incremental',
    incremental_strategy=('append' if target.type == 'spark' else 'delete+insert'),
    unique_key='as_of_date',
    on_schema_change='append_new_columns',
    pre_hook=(["{{ features_clear_dates() }}"] if target.type == 'spark' else []),
    post_hook=[
        "{{ delete_rows(this, 'as_of_date < (select max(as_of_date) from ' ~ this ~ ') - '
            ~ var('feature_retention_days') ~ ' and as_of_date not in (select as_of_date from '
            ~ ref('int_feature_dates') ~ ')') }}"
    ],
) }}
{% set categories = ['calcium', 'stomach_care', 'glucose_strips', 'bp_medication', 'maternal_nutrition',
                     'infant_formula', 'cognitive_training', 'skincare', 'otc_cold'] %}
with

dates as (select * from {{ ref('int_feature_dates') }}),
members as (select * from {{ ref('dim_member') }}),
order_versions as (select * from {{ ref('int_member_order_versions') }}),
order_lines as (select * from {{ ref('int_order_lines') }}),
engagement as (select * from {{ ref('fct_member_daily_engagement') }}),
identifiers as (select * from {{ ref('member_identifiers') }}),
tags as (select * from {{ ref('member_tags') }}),
catalog as (select * from {{ ref('category_catalog') }}),
consent as (select * from {{ ref('stg_consent__events') }}),

population as (
    select members.member_id, members.acquisition_channel, members.first_seen_on, dates.as_of_date
    from members
    cross join dates
    where members.first_seen_on < dates.as_of_date
),

orders as (
    -- Each order as it was known on the as-of date: its newest version landed before that date. A refund
    -- or an order that landed later does not exist yet for this date.
    select as_of_date, member_id, order_key, order_date, net_amount_cny
    from (
        select
            dates.as_of_date,
            order_versions.*,
            row_number() over (
                partition by dates.as_of_date, order_versions.order_key
                order by order_versions.updated_at desc, order_versions.loaded_on desc
            ) as version_rank
        from dates
        inner join order_versions on dates.as_of_date > order_versions.loaded_on
    ) as known_versions
    where version_rank = 1 and is_purchase and order_date < as_of_date
),

lines as (
    -- One row per order and category, so each category's order count is a plain count: nine
    -- count(distinct) aggregates cost a hash aggregate each (a fifth of the model at 1M members).
    select
        orders.as_of_date, orders.member_id, orders.order_key, orders.order_date, order_lines.category,
        sum(order_lines.line_amount_cny) as line_amount_cny
    from orders
    inner join order_lines on orders.order_key = order_lines.order_key
    group by orders.as_of_date, orders.member_id, orders.order_key, orders.order_date, order_lines.category
),

order_days as (
    select as_of_date, member_id, order_date, count(*) as orders, sum(net_amount_cny) as spend
    from orders
    group by as_of_date, member_id, order_date
),

orders_before as (
    select
        population.member_id,
        population.as_of_date,
        count(order_days.order_date) as purchase_days,
        coalesce(sum(order_days.orders), 0) as orders_total,
        coalesce(sum(order_days.spend), 0) as spend_total,
        coalesce(sum(order_days.orders) filter (where order_days.order_date >= population.as_of_date - 90), 0)
            as orders_90d,
        coalesce(sum(order_days.spend) filter (where order_days.order_date >= population.as_of_date - 90), 0)
            as spend_90d,
        {{ days_between('max(order_days.order_date)', 'population.as_of_date') }} as days_since_last_order,
        {{ days_between('min(order_days.order_date)', 'population.as_of_date') }} as days_since_first_order,
        {{ ordered_list('order_days.order_date') }} as order_dates
    from population
    left join order_days
        on population.member_id = order_days.member_id and population.as_of_date = order_days.as_of_date
    group by population.member_id, population.as_of_date
),

gaps as (
    select
        member_id,
        as_of_date,
        avg(gap) as purchase_gap_mean,
        stddev_samp(gap) as purchase_gap_std,
        {{ first_by('gap', 'order_date desc') }} as purchase_gap_last
    from (
        select
            member_id, as_of_date, order_date,
            {{ days_between(
                'lag(order_date) over (partition by member_id, as_of_date order by order_date)', 'order_date'
            ) }} as gap
        from (select member_id, as_of_date, {{ unnest('order_dates') }} as order_date from orders_before) as order_dates
    ) as purchase_gaps
    where gap is not null
    group by member_id, as_of_date
),

by_category as (
    select
        population.member_id,
        population.as_of_date,
        {%- for category in categories %}
        count(lines.order_key) filter (where lines.category = '{{ category }}') as orders_{{ category }},
        coalesce(sum(lines.line_amount_cny) filter (where lines.category = '{{ category }}'), 0)
            as spend_{{ category }},
        {{ days_between(
            "max(lines.order_date) filter (where lines.category = '" ~ category ~ "')", 'population.as_of_date'
        ) }} as days_since_{{ category }},
        {%- endfor %}
        min(lines.order_date) filter (where lines.category = 'infant_formula') as first_infant_formula_on
    from population
    left join lines on population.member_id = lines.member_id and population.as_of_date = lines.as_of_date
    group by population.member_id, population.as_of_date
),

recent_activity as (
    -- Engagement is aggregated per member and date before it meets the population (a join of every
    -- engagement row with the population cost more than the aggregates), and the windowed counts read
    -- only the 60 days before each as-of date.
    select
        engagement.member_id,
        dates.as_of_date,
        count(*) filter (where engagement.checkins > 0 and engagement.activity_date >= dates.as_of_date - 7)
            as checkin_days_7d,
        count(*) filter (
            where engagement.checkins > 0 and engagement.activity_date < dates.as_of_date - 7
            and engagement.activity_date >= dates.as_of_date - 28
        ) as checkin_days_prev_21d,
        -- minutes have one decimal: so do their sums, whatever order the threads add them in
        coalesce({{ round_double(
            'sum(engagement.livestream_minutes) filter (where engagement.activity_date >= dates.as_of_date - 30)', 1
        ) }}, 0) as live_minutes_30d,
        coalesce({{ round_double(
            'sum(engagement.livestream_minutes) filter (where engagement.activity_date < dates.as_of_date - 30)', 1
        ) }}, 0) as live_minutes_prev_30d,
        coalesce(sum(engagement.livestream_sessions) filter (
            where engagement.activity_date >= dates.as_of_date - 30
        ), 0) as live_sessions_30d,
        coalesce(sum(engagement.mp_visits) filter (where engagement.activity_date >= dates.as_of_date - 30), 0)
            as mp_visits_30d,
        coalesce(sum(engagement.mp_events) filter (where engagement.activity_date >= dates.as_of_date - 30), 0)
            as mp_events_30d,
        coalesce(sum(engagement.article_views) filter (
            where engagement.activity_date >= dates.as_of_date - 30
        ), 0) as article_views_30d,
        coalesce(sum(engagement.group_messages) filter (
            where engagement.activity_date >= dates.as_of_date - 30
        ), 0) as group_messages_30d
    from engagement
    inner join dates
        on engagement.activity_date < dates.as_of_date and engagement.activity_date >= dates.as_of_date - 60
    group by engagement.member_id, dates.as_of_date
),

last_activity as (
    select engagement.member_id, dates.as_of_date, max(engagement.activity_date) as last_activity_on
    from engagement
    inner join dates on engagement.activity_date < dates.as_of_date
    group by engagement.member_id, dates.as_of_date
),

activity as (
    select
        population.member_id,
        population.as_of_date,
        coalesce(recent_activity.checkin_days_7d, 0) as checkin_days_7d,
        coalesce(recent_activity.checkin_days_prev_21d, 0) as checkin_days_prev_21d,
        coalesce(recent_activity.live_minutes_30d, 0) as live_minutes_30d,
        coalesce(recent_activity.live_minutes_prev_30d, 0) as live_minutes_prev_30d,
        coalesce(recent_activity.live_sessions_30d, 0) as live_sessions_30d,
        coalesce(recent_activity.mp_visits_30d, 0) as mp_visits_30d,
        coalesce(recent_activity.mp_events_30d, 0) as mp_events_30d,
        coalesce(recent_activity.article_views_30d, 0) as article_views_30d,
        coalesce(recent_activity.group_messages_30d, 0) as group_messages_30d,
        {{ days_between(
            'greatest(last_activity.last_activity_on, population.first_seen_on)', 'population.as_of_date'
        ) }} as days_since_last_activity
    from population
    left join recent_activity using (member_id, as_of_date)
    left join last_activity using (member_id, as_of_date)
),

checkin_islands as (
    -- Runs of consecutive check-in days, of the members who checked in the day before an as-of date
    -- (only their last run is a streak).
    select member_id, min(activity_date) as run_start, max(activity_date) as run_end
    from (
        select
            member_id, activity_date,
            activity_date - cast(row_number() over (partition by member_id order by activity_date) as integer) as run
        from engagement
        where checkins > 0 and member_id in (
            select day_before.member_id from engagement as day_before
            inner join dates on day_before.activity_date = dates.as_of_date - 1
            where day_before.checkins > 0
        )
    ) as checkin_days
    group by member_id, run
),

streaks as (
    select
        population.member_id, population.as_of_date,
        max({{ days_between('checkin_islands.run_start', 'population.as_of_date') }}) as checkin_streak
    from population
    inner join checkin_islands
        on
            population.member_id = checkin_islands.member_id
            and checkin_islands.run_start <= population.as_of_date - 1
            and checkin_islands.run_end >= population.as_of_date - 1
    group by population.member_id, population.as_of_date
),

identifier_channels as (
    select member_id, first_seen_on, {{ unnest('channels') }} as channel from identifiers
),

channels as (
    select
        population.member_id, population.as_of_date,
        count(distinct identifier_channels.channel) as channels_used
    from population
    inner join identifier_channels
        on
            population.member_id = identifier_channels.member_id
            and population.as_of_date > identifier_channels.first_seen_on
    group by population.member_id, population.as_of_date
),

tags_then as (
    select
        population.member_id, population.as_of_date,
        max(tags.tag_value) filter (where tags.tag_group = 'lifecycle') as lifecycle_stage,
        max(tags.tag_value) filter (where tags.tag_group = 'funnel_stage') as funnel_stage,
        max(tags.tag_value) filter (where tags.tag_group = 'value_tier') as value_tier
    from population
    inner join tags
        on
            population.member_id = tags.member_id
            and tags.valid_from <= population.as_of_date - 1
            and (tags.valid_to is null or tags.valid_to > population.as_of_date - 1)
    where tags.tag_group in ('lifecycle', 'funnel_stage', 'value_tier')
    group by population.member_id, population.as_of_date
),

consent_then as (
    select
        population.member_id, population.as_of_date,
        bool_or(not consent.granted) filter (where consent.scope = 'marketing') as marketing_opt_out,
        -- the latest health-data answer; ties go to the refusal
        {{ first_by('consent.granted', 'consent.event_time desc, consent.granted', "consent.scope = 'health_data'") }}
            as health_data_consent
    from population
    inner join identifiers on population.member_id = identifiers.member_id
    inner join consent
        on
            identifiers.id_type = consent.id_type and identifiers.id_value = consent.id_value
            and population.as_of_date > consent.event_date
    group by population.member_id, population.as_of_date
),

final as (
    select
        population.member_id,
        population.as_of_date,
        -- Day counts and ratios are cast: PostgreSQL's date difference is an integer and its avg a numeric.
        cast({{ days_between('population.first_seen_on', 'population.as_of_date') }} as bigint) as tenure_days,
        population.acquisition_channel,
        coalesce(channels.channels_used, 0) as channels_used,
        cast(orders_before.orders_total as bigint) as orders_total,
        cast(orders_before.orders_90d as bigint) as orders_90d,
        cast(orders_before.spend_total as decimal(14, 2)) as spend_total,
        cast(orders_before.spend_90d as decimal(14, 2)) as spend_90d,
        cast(orders_before.days_since_last_order as bigint) as days_since_last_order,
        cast(orders_before.days_since_first_order as bigint) as days_since_first_order,
        cast(orders_before.purchase_days as bigint) as purchase_days,
        -- How far past the member's own rhythm the next purchase is: 1.0 = due now, 2.0 = one cycle late.
        cast(case
            when gaps.purchase_gap_mean > 0
                then orders_before.days_since_last_order / gaps.purchase_gap_mean
        end as {{ double_type() }})
            as purchase_overdue_ratio,
        -- as a double on every target: Spark divides decimals to six places
        cast(
            case
                when orders_before.orders_total > 0
                    then {{ divided('orders_before.spend_total', 'orders_before.orders_total') }}
            end
            as {{ double_type() }}
        ) as avg_order_value,
        cast(gaps.purchase_gap_mean as {{ double_type() }}) as purchase_gap_mean,
        cast(gaps.purchase_gap_std as {{ double_type() }}) as purchase_gap_std,
        cast(gaps.purchase_gap_last as bigint) as purchase_gap_last,
        {%- for category in categories %}
        by_category.orders_{{ category }},
        by_category.spend_{{ category }}::decimal(14, 2) as spend_{{ category }},
        cast(by_category.days_since_{{ category }} as bigint) as days_since_{{ category }},
        {%- endfor %}
        {%- for category in categories %}
        -- Days until the next expected purchase of the category (negative: overdue).
        cast(
            (
                select catalog.replenishment_days from catalog
                where catalog.category = '{{ category }}'
            )
            - by_category.days_since_{{ category }} as bigint
        ) as days_until_due_{{ category }},
        {%- endfor %}
        cast(
            floor(({{ days_between('by_category.first_infant_formula_on', 'population.as_of_date') }}) / 30.44)
            as integer
        ) as baby_age_months,
        activity.checkin_days_7d,
        activity.checkin_days_prev_21d,
        cast({{ divided('activity.checkin_days_7d', '7.0') }} as {{ double_type() }}) as checkin_rate_7d,
        cast({{ divided('activity.checkin_days_prev_21d', '21.0') }} as {{ double_type() }}) as checkin_rate_prev_21d,
        cast(
            {{ divided('activity.checkin_days_7d', '7.0') }} - {{ divided('activity.checkin_days_prev_21d', '21.0') }}
            as {{ double_type() }}
        )
            as checkin_rate_change,
        cast(coalesce(streaks.checkin_streak, 0) as bigint) as checkin_streak,
        activity.live_minutes_30d,
        activity.live_minutes_prev_30d,
        activity.live_minutes_30d - activity.live_minutes_prev_30d as live_minutes_trend,
        cast(activity.live_sessions_30d as bigint) as live_sessions_30d,
        cast(activity.mp_visits_30d as bigint) as mp_visits_30d,
        cast(activity.mp_events_30d as bigint) as mp_events_30d,
        cast(activity.article_views_30d as bigint) as article_views_30d,
        cast(activity.group_messages_30d as bigint) as group_messages_30d,
        cast(activity.days_since_last_activity as bigint) as days_since_last_activity,
        tags_then.lifecycle_stage,
        tags_then.funnel_stage,
        tags_then.value_tier,
        coalesce(consent_then.marketing_opt_out, false) as marketing_opt_out,
        coalesce(consent_then.health_data_consent, false) as health_data_consent
    from population
    left join orders_before using (member_id, as_of_date)
    left join gaps using (member_id, as_of_date)
    left join by_category using (member_id, as_of_date)
    left join activity using (member_id, as_of_date)
    left join streaks using (member_id, as_of_date)
    left join channels using (member_id, as_of_date)
    left join tags_then using (member_id, as_of_date)
    left join consent_then using (member_id, as_of_date)
)

select * from final
