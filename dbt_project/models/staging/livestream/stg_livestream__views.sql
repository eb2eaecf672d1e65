-- One row per livestream view (session, viewer, join time), in its first landing; incremental like
-- stg_wecom__group_events.
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ clear_for_rebuild('livestream', 'views') }}",
) }}
{%- set after = incremental_after('livestream', 'views') %}
with

as_of as (
    select * from {{ landed_as_of('livestream', 'views', after) }}
),

deduplicated as (
    select * from (
        select
            *, row_number() over (
                partition by session_id, platform, viewer_openid, join_time
                order by _loaded_at, _source_file, _row_number
            ) as arrival_rank
        from as_of
        {%- if after %}
        where not exists (
            select 1 from {{ this }} as seen
            where seen.session_id = as_of.session_id and seen.platform = as_of.platform
                and seen.viewer_key = as_of.platform || ':live:' || as_of.viewer_openid
                and seen.joined_at = as_of.join_time
        )
        {%- endif %}
    ) as ranked
    where arrival_rank = 1
),

final as (
    select
        session_id,
        platform,
        platform || ':live:' || viewer_openid as viewer_key,
        viewer_unionid,
        join_time as joined_at,
        leave_time as left_at,
        {{ divided("greatest(" ~ dbt.datediff('join_time', 'leave_time', 'second') ~ ", 0)", '60.0') }}
            as watch_minutes,
        coalesce(comments, 0) as comments,
        coalesce(product_clicks, 0) as product_clicks,
        local_date as view_date,
        loaded_on
    from deduplicated
)

select * from final
