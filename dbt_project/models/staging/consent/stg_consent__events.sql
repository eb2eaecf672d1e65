with

as_of as (
    select * from {{ landed_as_of('consent', 'events') }}
),

deduplicated as (
    select * from (
        select
            *,
            row_number() over (partition by event_id order by _loaded_at, _source_file, _row_number) as arrival_rank
        from as_of
    ) as ranked
    where arrival_rank = 1
),

final as (
    select
        event_id,
        -- Keys in the member_identifiers encoding (extract already turned mobile into phone_token).
        id_type,
        id_value,
        scope,
        granted,
        event_time,
        local_date as event_date,
        source as consent_source,
        loaded_on
    from deduplicated
)

select * from final
