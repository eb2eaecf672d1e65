-- Event activity per channel identifier per local day and landing day, before identity: the three event
-- staging tables summed to what fct_member_daily_engagement needs. Keyed by the source's own identifier,
-- so today's identity (merges, splits) never changes a stored row and the table only grows: a build adds
-- the rows landed after the newest landing day it holds for each source. It is rebuilt whenever one of
-- the event staging tables is (memberflow.transform.plan_incremental_build).
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ clear_for_rebuild_any(engagement_sources()) }}",
) }}
{%- set after = source_activity_after() %}
with

group_events as (
    select * from {{ ref('stg_wecom__group_events') }}
    {{ after_watermark(after, 'wecom.group_events') }}
),

mp_events as (
    select * from {{ ref('stg_miniprogram__events') }}
    {{ after_watermark(after, 'miniprogram.events') }}
),

live_views as (
    select * from {{ ref('stg_livestream__views') }}
    {{ after_watermark(after, 'livestream.views') }}
),

events as (
    select
        'wecom.group_events' as source,
        'external_userid' as id_type,
        external_userid as id_value,
        event_date as activity_date,
        loaded_on,
        cast((event_type = 'checkin') as int) as checkins,
        cast((event_type = 'message') as int) as group_messages,
        0 as watch_seconds,
        0 as livestream_sessions,
        0 as mp_visits,
        0 as mp_events,
        0 as article_views,
        0 as assessments
    from group_events
    union all
    select
        'miniprogram.events', 'openid', openid_key, event_date, loaded_on, 0, 0, 0, 0,
        cast((event_type = 'visit') as int), 1,
        cast((event_type = 'article_view') as int), cast((event_type = 'assessment') as int)
    from mp_events
    union all
    select
        -- whole seconds (watch_minutes is seconds / 60): sums stay exact however they are grouped
        'livestream.views', 'openid', viewer_key, view_date, loaded_on,
        0, 0, cast(round(watch_minutes * 60) as bigint), 1, 0, 0, 0, 0
    from live_views
),

final as (
    select
        source,
        id_type,
        id_value,
        activity_date,
        loaded_on,
        cast(sum(checkins) as bigint) as checkins,
        cast(sum(group_messages) as bigint) as group_messages,
        cast(sum(watch_seconds) as bigint) as watch_seconds,
        cast(sum(livestream_sessions) as bigint) as livestream_sessions,
        cast(sum(mp_visits) as bigint) as mp_visits,
        cast(sum(mp_events) as bigint) as mp_events,
        cast(sum(article_views) as bigint) as article_views,
        cast(sum(assessments) as bigint) as assessments,
        -- when the build that added the row ran: the uniqueness test checks the landing days it added
        cast('{{ run_started_at.strftime('%Y-%m-%d %H:%M:%S') }}' as timestamp) as added_at
    from events
    group by source, id_type, id_value, activity_date, loaded_on
)

select * from final
