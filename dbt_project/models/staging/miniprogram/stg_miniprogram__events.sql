with

source as (
    select *, {{ loaded_on() }} as loaded_on from {{ landed('miniprogram', 'events') }}
),

as_of as (
    select * from source where {{ as_of_filter() }}
),

deduplicated as (
    select *
    from as_of
    qualify row_number() over (partition by event_id order by _loaded_at, _source_file, _row_number) = 1
),

final as (
    select
        event_id,
        platform || ':' || app_id || ':' || openid as openid_key,
        platform,
        event_type,
        topic,
        event_time,
        local_date as event_date,
        loaded_on
    from deduplicated
)

select * from final
