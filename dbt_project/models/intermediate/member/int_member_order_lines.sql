-- One row per purchased order line (order, SKU) of a known member, with its category.
with

orders as (
    select * from {{ ref('fct_orders') }}
    where member_id is not null and is_purchase
),
lines as (select * from {{ ref('int_order_lines') }}),

final as (
    select orders.member_id, orders.order_key, orders.order_date, lines.sku_id, lines.category, lines.line_amount_cny
    from orders
    inner join lines on orders.order_key = lines.order_key
)

select * from final
