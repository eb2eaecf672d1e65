with

as_of as (
    select * from {{ landed_as_of('ecommerce', 'orders') }}
),

versioned as (
    -- One row per status change; the latest by updated_at is the order's current state.
    select
        *,
        min(loaded_on) over (partition by platform, order_id) as first_seen_on,
        row_number() over (partition by platform, order_id order by updated_at desc, _loaded_at desc) as version_rank
    from as_of
),

final as (
    select
        platform || ':' || order_id as order_key,
        platform,
        order_id,
        platform || ':' || buyer_id as buyer_key,
        mobile_masked,
        phone_token as member_phone_token,
        order_time as ordered_at,
        cast(timezone('Asia/Shanghai', order_time) as date) as order_date,
        status,
        amount_cny,
        updated_at,
        first_seen_on
    from versioned
    where version_rank = 1
)

select * from final
