-- One row per participant of a check-in camp (a WeCom contact in a check-in group, chat_id). A
-- participant's camp runs checkin_camp_days days from the day they joined (their first join event, or their
-- first event in the group when they joined before the data begins) and ends early on the day they leave;
-- only events up to the report's last day count.
{%- set camp_days = var('checkin_camp_days') %}
with

in_period as (
    select * from {{ up_to_report_day('stg_wecom__group_events', 'event_date') }}
),

participants as (
    select
        chat_id,
        external_userid,
        coalesce(min(event_date) filter (where event_type = 'join'), min(event_date)) as joined_on
    from in_period
    group by chat_id, external_userid
),

final as (
    select
        participants.chat_id,
        participants.external_userid,
        participants.joined_on,
        min(in_period.event_date) as left_on,
        least(
            participants.joined_on + {{ camp_days }},
            coalesce(min(in_period.event_date), participants.joined_on + {{ camp_days }})
        ) as camp_ends_on
    from participants
    left join in_period
        on
            participants.chat_id = in_period.chat_id
            and participants.external_userid = in_period.external_userid
            and participants.joined_on <= in_period.event_date
            -- only a leave can end a camp early: the other events are not joined at all
            and in_period.event_type = 'leave'
    group by participants.chat_id, participants.external_userid, participants.joined_on
)

select * from final
