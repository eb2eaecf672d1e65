-- depends_on: {{ ref('int_member_activity_days') }}
-- One row per segment membership decision with what the member did in its outcome window
-- (segment_outcome_counts, where the attribution rule is written down), today's member of the decided one
-- (segment_outcome_members), and the window's state on the last observed day: complete once the window's
-- last day has landed, settled outcome_late_days after that (later builds keep a settled row as counted).
-- Both move without a recount (the state every day for every open window), so they are derived here rather
-- than rewritten in the stored table by every build.
{{ config(
    materialized='view',
    pre_hook=[
        "drop table if exists {{ this.incorporate(path={'identifier': 'segment_outcomes__identifiers'}) }}",
        "drop table if exists {{ this.incorporate(path={'identifier': 'segment_outcomes__watermarks'}) }}",
    ],
) }}
{#- (the pre-hooks drop the state kept beside the table this view replaced) #}
{%- set observed = outcomes_observed_day() %}
select
    counts.as_of,
    counts.segment,
    counts.decided_member_id,
    -- every decided member has a row there (built from the same plans); the fallback only keeps a decision
    -- visible, out of the report, if one had not
    coalesce(members.member_id, counts.decided_member_id) as member_id,
    coalesce(members.member_current, false) as member_current,
    counts.channel,
    counts.message,
    counts.status,
    counts.reason,
    counts.holdout,
    counts.arm,
    counts.sent,
    counts.sent_at,
    counts.outcome,
    counts.outcome_days,
    counts.window_end,
    {{ outcomes_window_complete('counts.window_end', observed) }} as window_complete,
    {{ outcomes_settled('counts.window_end', observed) }} as settled,
    counts.planned_at,
    counts.counted_at,
    counts.orders,
    counts.spend_cny,
    counts.checkins,
    counts.opted_out,
    counts.responded
from {{ ref('segment_outcome_counts') }} as counts
left join {{ ref('segment_outcome_members') }} as members
    on counts.decided_member_id = members.decided_member_id
