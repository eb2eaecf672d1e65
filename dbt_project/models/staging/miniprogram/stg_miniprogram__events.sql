-- One row per mini-program event, in its first landing; incremental like stg_wecom__group_events.
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ clear_for_rebuild('miniprogram', 'events') }}",
) }}
{%- set after = incremental_after('miniprogram', 'events') %}
with

as_of as (
    select * from {{ landed_as_of('miniprogram', 'events', after) }}
),

deduplicated as (
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
