-- One row per day with check-in group activity: how many participants were in their camp that day
-- (int_checkin_participants says when a participant's camp runs) and how many of them checked in.
with

participants as (select * from {{ ref('int_checkin_participants') }}),
in_period as (
    select * from {{ up_to_report_day('stg_wecom__group_events', 'event_date') }}
),

days as (select distinct event_date as day from in_period),

checkins as (
    select distinct chat_id, external_userid, event_date
    from in_period
    where event_type = 'checkin'
),

final as (
    select
        days.day,
        count(*) as in_camp,
        count(checkins.event_date) as checked_in,
        {{ share('count(checkins.event_date)', 'count(*)') }} as checkin_rate
    from days
    inner join participants on days.day >= participants.joined_on and days.day < participants.camp_ends_on
    left join checkins
        on
            participants.chat_id = checkins.chat_id
            and participants.external_userid = checkins.external_userid
            and days.day = checkins.event_date
    group by days.day
)

select * from final
