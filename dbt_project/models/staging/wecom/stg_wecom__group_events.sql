-- One row per group event, in its first landing. Incremental: a build reads only the partitions newer
-- than the newest it holds and adds the events it has not seen (memberflow.transform.plan_incremental_build
-- rebuilds it when older partitions changed).
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ clear_for_rebuild('wecom', 'group_events') }}",
) }}
{%- set after = incremental_after('wecom', 'group_events') %}
with

as_of as (
    select * from {{ landed_as_of('wecom', 'group_events', after) }}
),

deduplicated as (
    -- The same event can arrive again in a later partition (late re-send): the first landing wins.
    select * from (
        select
            *,
            row_number() over (partition by event_id order by _loaded_at, _source_file, _row_number) as arrival_rank
        from as_of
        {%- if after %}
        where not exists (select 1 from {{ this }} as seen where seen.event_id = as_of.event_id)
        {%- endif %}
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
