-- One row per e-commerce order in its latest status (the newest landed version by updated_at).
with

versions as (
    select * from {{ ref('stg_ecommerce__order_versions') }}
),

final as (
    select
        order_key,
        platform,
        order_id,
        buyer_key,
        mobile_masked,
        member_phone_token,
        ordered_at,
        order_date,
        status,
        amount_cny,
        updated_at,
        first_seen_on,
        last_seen_on,
        member_phone_first_seen_on
    from versions
    where version_rank = 1
)

select * from final
