with

as_of as (
    select * from {{ landed_as_of('insurance', 'policies') }}
),

versioned as (
    select
        *,
        min(loaded_on) over (partition by partner, policy_id) as first_seen_on,
        min(loaded_on) over (partition by partner, policy_id, holder_mobile_hmac) as holder_phone_first_seen_on,
        row_number() over (partition by partner, policy_id order by updated_at desc, _loaded_at desc) as version_rank
    from as_of
),

final as (
    select
        partner || ':' || policy_id as policy_key,
        partner,
        policy_id,
        holder_mobile_hmac as holder_phone_token,
        product_code,
        start_date,
        end_date,
        status,
        updated_at,
        first_seen_on,
        holder_phone_first_seen_on
    from versioned
    where version_rank = 1
)

select * from final
