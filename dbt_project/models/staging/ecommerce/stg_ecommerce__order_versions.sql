-- One row per landed version of an e-commerce order (each status change arrives as a new row), with the
-- day it landed: what was known about the order on any past day (point-in-time features read this).
with

as_of as (
    select * from {{ landed_as_of('ecommerce', 'orders') }}
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
        {{ china_date('order_time') }} as order_date,
        status,
        amount_cny,
        updated_at,
        loaded_on,
        min(loaded_on) over (partition by platform, order_id) as first_seen_on,
        max(loaded_on) over (partition by platform, order_id) as last_seen_on,
        min(loaded_on) over (partition by platform, order_id, phone_token) as member_phone_first_seen_on,
        row_number() over (partition by platform, order_id order by updated_at desc, _loaded_at desc) as version_rank
    from as_of
)

select * from final
