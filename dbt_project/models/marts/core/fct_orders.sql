-- One row per order, e-commerce and store alike, with the member who placed it (null for walk-ins
-- without a card). Refunded and cancelled orders stay, marked, with a net amount of 0. last_changed_on is
-- the newest day a version of the order landed (a store receipt never changes): what the incremental
-- fct_member_daily_engagement reads to find the orders that changed since its last build.
with

ecom_orders as (select * from {{ ref('stg_ecommerce__orders') }}),
ecom_items as (select * from {{ ref('stg_ecommerce__order_items') }}),
store_orders as (select * from {{ ref('stg_store_pos__orders') }}),
store_items as (select * from {{ ref('stg_store_pos__order_items') }}),
identifiers as (select * from {{ ref('member_identifiers') }}),

items as (
    select
        order_key,
        count(*) as line_count,
        cast(sum(qty) as bigint) as units,
        {{ sorted_set('category') }} as categories
    from (
        select 'ecommerce:' || order_key as order_key, qty, category from ecom_items
        union all
        select 'store_pos:' || order_key, qty, category from store_items
    ) as lines
    group by order_key
),

unified as (
    select
        'ecommerce:' || order_key as order_key,
        'ecommerce' as source,
        platform as outlet,
        'buyer_id' as id_type,
        buyer_key as id_value,
        ordered_at,
        order_date,
        status,
        amount_cny as gross_amount_cny,
        first_seen_on,
        last_seen_on as last_changed_on
    from ecom_orders
    union all
    select
        'store_pos:' || order_key,
        'store_pos',
        store_id,
        'card_no',
        card_no,
        ordered_at,
        order_date,
        'completed',
        amount_cny,
        first_seen_on,
        -- a receipt lands once: first seen is last changed
        first_seen_on  -- noqa: AL08
    from store_orders
),

final as (
    select
        unified.order_key,
        unified.source,
        unified.outlet,
        identifiers.member_id,
        unified.ordered_at,
        unified.order_date,
        unified.status,
        unified.status in ('paid', 'shipped', 'completed') as is_purchase,
        unified.status = 'completed' as is_completed,
        unified.gross_amount_cny,
        case when unified.status in ('refunded', 'cancelled') then 0 else unified.gross_amount_cny end
            as net_amount_cny,
        coalesce(items.line_count, 0) as line_count,
        coalesce(items.units, 0) as units,
        coalesce(items.categories, {{ empty_string_list() }}) as categories,
        unified.first_seen_on,
        unified.last_changed_on
    from unified
    left join identifiers on unified.id_type = identifiers.id_type and unified.id_value = identifiers.id_value
    left join items on unified.order_key = items.order_key
)

select * from final
