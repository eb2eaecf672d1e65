-- One row per member per local day with any activity: group check-ins and messages, livestream watching,
-- mini-program use and purchases.
with

group_events as (select * from {{ ref('stg_wecom__group_events') }}),
mp_events as (select * from {{ ref('stg_miniprogram__events') }}),
live_views as (select * from {{ ref('stg_livestream__views') }}),
orders as (select * from {{ ref('fct_orders') }} where member_id is not null),
identifiers as (select * from {{ ref('member_identifiers') }}),

activity as (
    select
        identifiers.member_id,
        group_events.event_date as activity_date,
        (group_events.event_type = 'checkin')::int as checkins,
        (group_events.event_type = 'message')::int as group_messages,
        0.0 as livestream_minutes,
        0 as livestream_sessions,
        0 as mp_visits,
        0 as mp_events,
        0 as article_views,
        0 as assessments,
        0 as orders,
        0.0 as spend_cny
    from group_events
    inner join identifiers
        on identifiers.id_type = 'external_userid' and group_events.external_userid = identifiers.id_value
    union all
    select
        identifiers.member_id, mp_events.event_date, 0, 0, 0.0, 0,
        (mp_events.event_type = 'visit')::int, 1,
        (mp_events.event_type = 'article_view')::int, (mp_events.event_type = 'assessment')::int, 0, 0.0
    from mp_events
    inner join identifiers on identifiers.id_type = 'openid' and mp_events.openid_key = identifiers.id_value
    union all
    select
        identifiers.member_id, live_views.view_date, 0, 0, live_views.watch_minutes, 1, 0, 0, 0, 0, 0, 0.0
    from live_views
    inner join identifiers on identifiers.id_type = 'openid' and live_views.viewer_key = identifiers.id_value
    union all
    select member_id, order_date, 0, 0, 0.0, 0, 0, 0, 0, 0, is_purchase::int, net_amount_cny
    from orders
),

final as (
    select
        member_id,
        activity_date,
        sum(checkins)::bigint as checkins,
        sum(group_messages)::bigint as group_messages,
        {{ round_double('sum(livestream_minutes)', 1) }} as livestream_minutes,
        sum(livestream_sessions)::bigint as livestream_sessions,
        sum(mp_visits)::bigint as mp_visits,
        sum(mp_events)::bigint as mp_events,
        sum(article_views)::bigint as article_views,
        sum(assessments)::bigint as assessments,
        sum(orders)::bigint as orders,
        sum(spend_cny)::decimal(14, 2) as spend_cny
    from activity
    group by member_id, activity_date
)

select * from final
