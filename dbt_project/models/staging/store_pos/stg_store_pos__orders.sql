with

as_of as (
    select * from {{ landed_as_of('store_pos', 'orders') }}
),

deduplicated as (
    select * from (
        select
            *,
            row_number() over (
                partition by store_id, receipt_no order by _loaded_at, _source_file, _row_number
            ) as arrival_rank
        from as_of
    ) as ranked
    where arrival_rank = 1
),

final as (
    select
        store_id || ':' || receipt_no as order_key,
        store_id,
        receipt_no,
        card_no,
        order_time as ordered_at,
        local_date as order_date,
        amount_cny,
        coalesce(pharmacist_consult, false) as pharmacist_consult,
        loaded_on as first_seen_on
    from deduplicated
)

select * from final
