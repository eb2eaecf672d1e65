with

as_of as (
    select * from {{ landed_as_of('store_pos', 'members') }}
),

versioned as (
    select
        *,
        min(loaded_on) over (partition by card_no) as first_seen_on,
        -- The card-phone link is as old as the first landed version carrying this phone.
        min(loaded_on) over (partition by card_no, phone_token) as phone_first_seen_on,
        row_number() over (partition by card_no order by updated_at desc, _loaded_at desc) as version_rank
    from as_of
),

final as (
    select
        card_no,
        phone_token,
        phone_masked,
        store_id,
        join_time as joined_at,
        birth_date,
        updated_at,
        first_seen_on,
        phone_first_seen_on
    from versioned
    where version_rank = 1
)

select * from final
