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
        lead(activity_date) over (partition by member_id order by activity_date) as next_activity
    from activity
),

raw_ranges as (
    select
        member_id, 'active' as stage, activity_date as valid_from,
        least(coalesce(next_activity, activity_date + 15), activity_date + 15) as valid_to
    from spans
    union all
    select
        member_id, 'at_risk', activity_date + 15,
        least(coalesce(next_activity, activity_date + 30), activity_date + 30)
    from spans
    where next_activity is null or next_activity > activity_date + 15
    union all
    select member_id, 'silent', activity_date + 30, next_activity
    from spans
    where next_activity is null or next_activity > activity_date + 30
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

non_empty as (
    select * from with_new_and_lost
    where valid_to is null or valid_to > valid_from
),

islands as (
    -- Merge back-to-back ranges of the same stage.
    select
        *,
        sum(starts_island) over (partition by member_id order by valid_from, stage rows unbounded preceding) as island
    from (
        select
            *,
            case
                when
                    lag(stage) over (partition by member_id order by valid_from, stage) = stage
                    and lag(valid_to) over (partition by member_id order by valid_from, stage) = valid_from
                    then 0
                else 1
            end as starts_island
        from non_empty
    ) as ranges
),

final as (
    select
        member_id,
        stage,
        min(valid_from) as valid_from,
        case when bool_or(valid_to is null) then null else max(valid_to) end as valid_to
    from islands
    group by member_id, stage, island
)

select * from final
