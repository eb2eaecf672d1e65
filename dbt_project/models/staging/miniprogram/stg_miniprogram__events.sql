with

as_of as (
    select * from {{ landed_as_of('miniprogram', 'events') }}
),

deduplicated as (
    select * from (
        select *, row_number() over (partition by event_id order by _loaded_at, _source_file, _row_number) as arrival_rank
        from as_of
    ) as ranked
    where arrival_rank = 1
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
