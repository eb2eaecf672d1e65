-- One row per purchased order line of a known member, with its category.
with

orders as (select * from {{ ref('fct_orders') }} where member_id is not null and is_purchase),
ecom_items as (select * from {{ ref('stg_ecommerce__order_items') }}),
store_items as (select * from {{ ref('stg_store_pos__order_items') }}),

lines as (
    select 'ecommerce:' || order_key as order_key, category, line_amount_cny from ecom_items
    union all
    select 'store_pos:' || order_key, category, line_amount_cny from store_items
),

final as (
    select orders.member_id, orders.order_key, orders.order_date, lines.category, lines.line_amount_cny
    from orders
    inner join lines on orders.order_key = lines.order_key
)

select * from final
