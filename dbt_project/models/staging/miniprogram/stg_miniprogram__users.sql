with

as_of as (
    select * from {{ landed_as_of('miniprogram', 'users') }}
),

versioned as (
    select
        *,
        min(loaded_on) over (partition by platform, app_id, openid) as first_seen_on,
        -- Links are dated by the first landed version asserting them (a phone bound later is later evidence).
        min(loaded_on) over (partition by platform, app_id, openid, unionid) as unionid_first_seen_on,
        min(loaded_on) over (partition by platform, app_id, openid, phone_token) as phone_first_seen_on,
        row_number() over (
            partition by platform, app_id, openid order by updated_at desc, _loaded_at desc
        ) as version_rank
    from as_of
),

final as (
    select
        platform || ':' || app_id || ':' || openid as openid_key,
        platform,
        app_id,
        openid,
        unionid,
        phone_token,
        phone_masked,
        register_time as registered_at,
        updated_at,
        first_seen_on,
        unionid_first_seen_on,
        phone_first_seen_on
    from versioned
    where version_rank = 1
)

select * from final
