-- One row per livestream session (platform, session_id): attendance, watch time, product clicks, and the
-- orders its viewers placed within 7 days (the session's day and the six after it). A viewer is matched to
-- a member through their livestream openid (member_identifiers); orders are those not cancelled.
-- `window_closed` is false while the 7 days run past the report's last day: its order counts still grow.
with

views as (
    select * from {{ up_to_report_day('stg_livestream__views', 'view_date') }}
),
identifiers as (select * from {{ ref('member_identifiers') }}),
orders as (select * from {{ ref('fct_orders') }}),
period as (select * from {{ ref('int_report_period') }}),

sessions as (
    select
        platform,
        session_id,
        min(view_date) as session_date,
        count(distinct viewer_key) as viewers,
        count(*) as views,
        sum(watch_minutes) as watch_minutes,
        sum(coalesce(comments, 0)) as comments,
        sum(coalesce(product_clicks, 0)) as product_clicks,
        count(distinct viewer_key) filter (where product_clicks > 0) as clicking_viewers
    from views
    group by platform, session_id
),

viewer_members as (
    select distinct views.platform, views.session_id, identifiers.member_id
    from views
    inner join identifiers on identifiers.id_type = 'openid' and views.viewer_key = identifiers.id_value
),

session_orders as (
    select
        sessions.platform,
        sessions.session_id,
        count(distinct viewer_members.member_id) as matched_viewers,
        count(distinct orders.member_id) as buyers_7d,
        count(distinct orders.order_key) as orders_7d,
        coalesce(sum(orders.net_amount_cny), 0) as revenue_7d_cny
    from sessions
    inner join viewer_members
        on sessions.platform = viewer_members.platform and sessions.session_id = viewer_members.session_id
    left join orders
        on
            viewer_members.member_id = orders.member_id
            and orders.status <> 'cancelled'
            and sessions.session_date <= orders.order_date
            and orders.order_date < sessions.session_date + 7
    group by sessions.platform, sessions.session_id
),

final as (
    select
        sessions.platform,
        sessions.session_id,
        sessions.session_date,
        sessions.viewers,
        sessions.views,
        {{ round_double('sessions.watch_minutes', 1) }} as watch_minutes,
        {{ share('sessions.watch_minutes', 'sessions.viewers', 1) }} as watch_minutes_per_viewer,
        sessions.comments,
        sessions.product_clicks,
        sessions.clicking_viewers,
        coalesce(session_orders.matched_viewers, 0) as matched_viewers,
        coalesce(session_orders.buyers_7d, 0) as buyers_7d,
        coalesce(session_orders.orders_7d, 0) as orders_7d,
        coalesce(session_orders.revenue_7d_cny, 0) as revenue_7d_cny,
        {{ share('coalesce(session_orders.buyers_7d, 0)', 'sessions.viewers') }} as buyer_rate_7d,
        sessions.session_date + 6 <= period.observed_through as window_closed
    from sessions
    cross join period
    left join session_orders
        on sessions.platform = session_orders.platform and sessions.session_id = session_orders.session_id
)

select * from final
