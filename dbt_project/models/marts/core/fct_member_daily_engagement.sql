-- One row per member per local day with any activity: group check-ins and messages, livestream watching,
-- mini-program use and purchases. Incremental: a build recomputes only the members whose activity, orders
-- or identifiers changed since the last one (macros/engagement.sql says how, and when it starts over).
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook=[
        "{{ drop_state('affected') }}",
        "{{ engagement_find_affected() }}",
        "{{ engagement_clear() }}",
    ],
    post_hook=[
        "{{ drop_state('identifiers') }}",
        "{{ remember_identifiers(engagement_id_types()) }}",
        "{{ drop_state('watermarks') }}",
        "{{ remember_watermarks() }}",
        "{{ drop_state('affected') }}",
    ],
) }}
{%- set only_affected = not engagement_rebuild() %}
with

source_activity as (select * from {{ ref('int_source_daily_activity') }}),
orders as (
    select * from {{ ref('fct_orders') }}
    where member_id is not null
),
identifiers as (select * from {{ ref('member_identifiers') }}),
{%- if only_affected %}
affected as (select member_id from {{ state_relation('affected') }}),
{%- endif %}

activity as (
    select
        identifiers.member_id,
        source_activity.activity_date,
        source_activity.checkins,
        source_activity.group_messages,
        source_activity.watch_seconds,
        source_activity.livestream_sessions,
        source_activity.mp_visits,
        source_activity.mp_events,
        source_activity.article_views,
        source_activity.assessments,
        0 as orders,
        0.0 as spend_cny
    from source_activity
    inner join identifiers
        on source_activity.id_type = identifiers.id_type and source_activity.id_value = identifiers.id_value
    {%- if only_affected %}
    where identifiers.member_id in (select member_id from affected)
    {%- endif %}
    union all
    select member_id, order_date, 0, 0, 0, 0, 0, 0, 0, 0, cast(is_purchase as int), net_amount_cny
    from orders
    {%- if only_affected %}
    where member_id in (select member_id from affected)
    {%- endif %}
),

final as (
    select
        member_id,
        activity_date,
        cast(sum(checkins) as bigint) as checkins,
        cast(sum(group_messages) as bigint) as group_messages,
        {{ round_double('sum(watch_seconds) / 60.0', 1) }} as livestream_minutes,
        cast(sum(livestream_sessions) as bigint) as livestream_sessions,
        cast(sum(mp_visits) as bigint) as mp_visits,
        cast(sum(mp_events) as bigint) as mp_events,
        cast(sum(article_views) as bigint) as article_views,
        cast(sum(assessments) as bigint) as assessments,
        cast(sum(orders) as bigint) as orders,
        cast(sum(spend_cny) as decimal(14, 2)) as spend_cny
    from activity
    group by member_id, activity_date
)

select * from final
