-- Interests a member has shown, from the day first shown: categories bought, articles read, assessments.
with

orders as (
    select * from {{ ref('fct_orders') }}
    where member_id is not null and is_purchase
),
mp_events as (select * from {{ ref('stg_miniprogram__events') }}),
identifiers as (select * from {{ ref('member_identifiers') }}),
catalog as (select * from {{ ref('category_catalog') }}),

signals as (
    select orders.member_id, {{ unnest('orders.categories') }} as category, orders.order_date as shown_on
    from orders
    union all
    select identifiers.member_id, mp_events.topic, mp_events.event_date
    from mp_events
    inner join identifiers on identifiers.id_type = 'openid' and mp_events.openid_key = identifiers.id_value
    where mp_events.event_type in ('article_view', 'assessment') and mp_events.topic is not null
),

final as (
    select
        signals.member_id, catalog.interest, bool_or(catalog.health_related) as health_related,
        min(signals.shown_on) as valid_from
    from signals
    inner join catalog on signals.category = catalog.category
    group by signals.member_id, catalog.interest
)

select * from final
