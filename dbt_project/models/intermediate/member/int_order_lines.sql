-- One row per order line (order, SKU), e-commerce and store alike, with its category (whatever the order's
-- status).
with

ecom_items as (select * from {{ ref('stg_ecommerce__order_items') }}),
store_items as (select * from {{ ref('stg_store_pos__order_items') }}),

final as (
    select 'ecommerce:' || order_key as order_key, sku_id, category, line_amount_cny from ecom_items
    union all
    select 'store_pos:' || order_key, sku_id, category, line_amount_cny from store_items
)

select * from final
