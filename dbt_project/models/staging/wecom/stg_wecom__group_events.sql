with

as_of as (
    select * from {{ landed_as_of('wecom', 'group_events') }}
),

deduplicated as (
    -- The same event can arrive again in a later partition (late re-send): the first landing wins.
    select * from (
        select *, row_number() over (partition by event_id order by _loaded_at, _source_file, _row_number) as arrival_rank
        from as_of
    ) as ranked
    where arrival_rank = 1
),

final as (
    select
        event_id,
        external_userid,
        chat_id,
        event_type,
        checkin_topic,
        event_time,
        local_date as event_date,
        loaded_on
    from deduplicated
)

select * from final
