-- Lifecycle stage as validity ranges [valid_from, valid_to): new while first touch is at most 7 days ago;
-- active while the last activity is at most 14 days ago; at_risk at 15-29 days without activity; silent
-- from 30; lost from the day the member opted out or removed the WeCom contact.
with

activity as (select * from {{ ref('int_member_activity_days') }}),
milestones as (select * from {{ ref('int_member_milestones') }}),

spans as (
    select
        member_id,
        activity_date,
        lead(activity_date) over by_day as next_activity,
        first_value(activity_date) over by_day as first_activity
    from activity
    window by_day as (partition by member_id order by activity_date)
),

runs as (
    -- Runs of activity days at most 15 days apart, one row each: a member stays active through a run and
    -- for 15 days after its last day. Only a run's last day is kept (the next run starts on its
    -- next_activity), so what follows handles a few runs per member rather than every day.
    select
        member_id,
        coalesce(lag(next_activity) over (partition by member_id order by activity_date), first_activity)
            as first_day,
        activity_date as last_day,
        next_activity
    from spans
    where next_activity is null or next_activity > activity_date + 15
),

raw_ranges as (
    select member_id, 'active' as stage, first_day as valid_from, last_day + 15 as valid_to
    from runs
    union all
    select member_id, 'at_risk', last_day + 15, least(coalesce(next_activity, last_day + 30), last_day + 30)
    from runs
    union all
    select member_id, 'silent', last_day + 30, next_activity
    from runs
    where next_activity is null or next_activity > last_day + 30
),

with_new_and_lost as (
    -- 'new' covers days 0-7 after first touch; 'lost' is final. Other stages are clipped around both.
    select
        raw_ranges.member_id,
        raw_ranges.stage,
        greatest(raw_ranges.valid_from, milestones.first_seen_on + 8) as valid_from,
        case
            when milestones.lost_on is null then raw_ranges.valid_to
            when raw_ranges.valid_to is null then milestones.lost_on
            else least(raw_ranges.valid_to, milestones.lost_on)
        end as valid_to
    from raw_ranges
    inner join milestones on raw_ranges.member_id = milestones.member_id
    union all
    select
        member_id, 'new', first_seen_on,
        case when lost_on is not null then least(first_seen_on + 8, lost_on) else first_seen_on + 8 end
    from milestones
    union all
    select member_id, 'lost', lost_on, null from milestones
    where lost_on is not null
),

final as (
    -- No two ranges of a stage meet: a run's ranges follow one another, and the clipping above cuts
    -- only at the ends of a member's timeline, so nothing between two ranges disappears.
    select member_id, stage, valid_from, valid_to from with_new_and_lost
    where valid_to is null or valid_to > valid_from
)

select * from final
