-- One row per check-in camp (a WeCom check-in group, chat_id): who enrolled, on how many of their camp days
-- they checked in, and how many completed 21 and 28 days (int_checkin_participants says when a participant's
-- camp runs). Completion counts only participants whose 21 (28) days are over by the report's last day;
-- those who checked in on at least checkin_completion_share of the days (before leaving, if they left)
-- completed.
{%- set completion_share = var('checkin_completion_share') %}
with

participants as (select * from {{ ref('int_checkin_participants') }}),
events as (
    select * from {{ up_to_report_day('stg_wecom__group_events', 'event_date') }}
),
period as (select * from {{ ref('int_report_period') }}),

checkins as (
    select distinct chat_id, external_userid, event_date, checkin_topic
    from events
    where event_type = 'checkin'
),

-- the days each participant checked in: counted with count(), not count(distinct) over the topics' rows
-- (one hash table per aggregate made this report as slow as member_features at 1M members)
checkin_dates as (select distinct chat_id, external_userid, event_date from checkins),

per_participant as (
    select
        participants.chat_id,
        participants.external_userid,
        participants.joined_on,
        participants.left_on,
        {{ days_between('participants.joined_on', 'least(participants.camp_ends_on, period.observed_through + 1)') }}
            as camp_days_so_far,
        count(checkin_dates.event_date) filter (where checkin_dates.event_date < participants.camp_ends_on)
            as checkin_days_in_camp,
        count(checkin_dates.event_date) filter (
            where checkin_dates.event_date < least(participants.camp_ends_on, participants.joined_on + 21)
        ) as checkin_days_21,
        count(checkin_dates.event_date) filter (
            where checkin_dates.event_date < least(participants.camp_ends_on, participants.joined_on + 28)
        ) as checkin_days_28,
        participants.joined_on + 20 <= period.observed_through as past_21,
        participants.joined_on + 27 <= period.observed_through as past_28
    from participants
    cross join period
    left join checkin_dates
        on
            participants.chat_id = checkin_dates.chat_id
            and participants.external_userid = checkin_dates.external_userid
            and participants.joined_on <= checkin_dates.event_date
            -- every count is of days in the camp: later check-ins are not joined at all
            and participants.camp_ends_on > checkin_dates.event_date
    group by
        participants.chat_id, participants.external_userid, participants.joined_on, participants.left_on,
        participants.camp_ends_on, period.observed_through
),

topics as (
    select
        chat_id,
        checkin_topic,
        row_number() over (partition by chat_id order by count(*) desc, checkin_topic) as topic_rank
    from checkins
    where checkin_topic is not null
    group by chat_id, checkin_topic
),

camps as (
    select
        chat_id,
        min(joined_on) as started_on,
        count(*) as enrolled,
        count(*) filter (where left_on is null) as still_in_group,
        sum(camp_days_so_far) as camp_days,
        sum(checkin_days_in_camp) as checkin_days,
        count(*) filter (where past_21) as eligible_21d,
        count(*) filter (
            where past_21 and checkin_days_21 >= {{ (21 * completion_share) | round(0, 'ceil') | int }}
        ) as completed_21d,
        count(*) filter (where past_28) as eligible_28d,
        count(*) filter (
            where past_28 and checkin_days_28 >= {{ (28 * completion_share) | round(0, 'ceil') | int }}
        ) as completed_28d
    from per_participant
    group by chat_id
),

final as (
    select
        camps.chat_id,
        topics.checkin_topic as topic,
        camps.started_on,
        camps.enrolled,
        camps.still_in_group,
        camps.camp_days,
        camps.checkin_days,
        {{ share('camps.checkin_days', 'camps.camp_days') }} as daily_checkin_rate,
        camps.eligible_21d,
        camps.completed_21d,
        {{ share('camps.completed_21d', 'camps.eligible_21d') }} as completion_21d,
        camps.eligible_28d,
        camps.completed_28d,
        {{ share('camps.completed_28d', 'camps.eligible_28d') }} as completion_28d
    from camps
    left join topics on camps.chat_id = topics.chat_id and topics.topic_rank = 1
)

select * from final
