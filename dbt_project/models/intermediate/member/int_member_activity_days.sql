-- One row per member per day with any activity (engagement, purchase) or the first sighting.
with

engagement as (select member_id, activity_date from {{ ref('fct_member_daily_engagement') }}),
members as (select member_id, first_seen_on from {{ ref('dim_member') }}),

final as (
    -- the engagement fact has one row per member and day (its uniqueness test), so only the first
    -- sightings on a day without activity are added: no distinct over every row
    select member_id, activity_date from engagement
    union all
    select members.member_id, members.first_seen_on from members
    where not exists (
        select 1 from engagement
        where engagement.member_id = members.member_id and engagement.activity_date = members.first_seen_on
    )
)

select * from final
