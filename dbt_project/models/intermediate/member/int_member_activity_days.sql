-- One row per member per day with any activity (engagement, purchase) or the first sighting.
with

engagement as (select member_id, activity_date from {{ ref('fct_member_daily_engagement') }}),
members as (select member_id, first_seen_on from {{ ref('dim_member') }}),

final as (
    select member_id, activity_date from engagement
    union
    select member_id, first_seen_on from members
)

select * from final
