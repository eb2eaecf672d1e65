-- depends_on: {{ ref('int_member_activity_days') }}
-- One row per segment membership decision with what the member did in its outcome window
-- (segment_outcome_counts, where the attribution rule is written down), and the window's state on the last
-- observed day: complete once the window's last day has landed, settled outcome_late_days after that (later
-- builds keep a settled row as counted). The state moves every day for every open window, so it is derived
-- here, from the day the build observed, rather than rewritten in the stored table by every build.
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
    as_of,
    segment,
    decided_member_id,
    member_id,
    member_current,
    channel,
    message,
    status,
    reason,
    holdout,
    arm,
    sent,
    sent_at,
    outcome,
    outcome_days,
    window_end,
    {{ outcomes_window_complete('window_end', observed) }} as window_complete,
    {{ outcomes_settled('window_end', observed) }} as settled,
    planned_at,
    counted_at,
    orders,
    spend_cny,
    checkins,
    opted_out,
    responded
from {{ ref('segment_outcome_counts') }}
