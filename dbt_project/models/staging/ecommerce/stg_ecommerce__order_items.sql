with

source as (
    select *, {{ loaded_on() }} as loaded_on from {{ landed('ecommerce', 'order_items') }}
),

as_of as (
    select * from source where {{ as_of_filter() }}
),

deduplicated as (
    select *
    from as_of
    qualify row_number() over (partition by platform, order_id, sku_id order by _loaded_at desc) = 1
),

final as (
    select
        platform || ':' || order_id as order_key,
        sku_id,
        category,
        qty,
        unit_price_cny,
        qty * unit_price_cny as line_amount_cny
    from deduplicated
)

select * from final
