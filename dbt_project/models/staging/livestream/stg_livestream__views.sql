with

as_of as (
    select * from {{ landed_as_of('livestream', 'views') }}
),

deduplicated as (
    select * from (
        select *, row_number() over (
            partition by session_id, platform, viewer_openid, join_time order by _loaded_at, _source_file, _row_number
        ) as arrival_rank
        from as_of
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
        greatest({{ dbt.datediff('join_time', 'leave_time', 'second') }}, 0) / 60.0 as watch_minutes,
        coalesce(comments, 0) as comments,
        coalesce(product_clicks, 0) as product_clicks,
        local_date as view_date,
        loaded_on
    from deduplicated
)

select * from final
