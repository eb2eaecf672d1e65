with

as_of as (
    select * from {{ landed_as_of('store_pos', 'order_items') }}
),

deduplicated as (
    select * from (
        select *, row_number() over (partition by store_id, receipt_no, sku_id order by _loaded_at desc) as arrival_rank
        from as_of
    ) as ranked
    where arrival_rank = 1
),

final as (
    select
        store_id || ':' || receipt_no as order_key,
        sku_id,
        category,
        qty,
        unit_price_cny,
        qty * unit_price_cny as line_amount_cny
    from deduplicated
)

select * from final
