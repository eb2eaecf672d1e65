-- depends_on: {{ ref('int_member_activity_days') }}
-- The stored half of segment_outcomes (the view adds today's member and each window's state on the last
-- observed day): one row per segment membership decision (segment_memberships: members sent, held out, or
-- suppressed), with what the member did in the decision's outcome window: orders, spend, check-ins and a
-- marketing opt-out from the delivery date on, for the segment's outcome_days. The attribution rule: an order
-- counts for a decision when it is placed (China-local order date) within [as_of, as_of + outcome_days) by
-- the member the decision named, followed through later merges to today's member id (or, for a member whose
-- identifiers all left it in a split, to the member they went to: segment_outcome_members); cancelled and
-- refunded orders do not count. Every decision whose window covers the order gets it (last touch is the
-- uplift report's business: it compares sent with held out).
-- `arm`: holdout (kept out on purpose), ineligible (suppressed before the holdout was drawn: opted out, no
-- consent or address; in neither arm), treated (everyone else: intent to treat, sent or held back by a
-- cap); `sent`: the delivery ledger recorded the message as sent.
-- segment_memberships and delivery_ledger are written by memberflow's deliveries; before the first one
-- this model is empty.
-- Incremental (macros/outcomes.sql says how): a daily build attributes the new decision dates and recounts
-- the rows not settled yet (settled: the window closed outcome_late_days before the last observed day, so
-- rows landing a few days late still count) of the members with something new since the last build. Settled
-- rows keep what they counted. At a million members a year of decisions is hundreds of millions of rows, and
-- even the unsettled weeks are tens of millions: recounting them every day would nearly double the daily
-- build. For the same reason nothing that moves without a recount is stored: the member a decision follows
-- (a merge, a split, a vanished member) and the window's state are the view's.
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    on_schema_change='sync_all_columns',
    pre_hook=[
        "{{ outcomes_drop_work('affected') }}",
        "{{ outcomes_drop_work('dates') }}",
        "{{ outcomes_drop_work('decisions') }}",
        "{{ outcomes_drop_work('todo') }}",
        "{{ outcomes_find_dates() }}",
        "{{ outcomes_find_affected() }}",
        "{{ outcomes_find_decisions() }}",
        "{{ outcomes_collect() }}",
        "{{ outcomes_clear('dates') }}",
        "{{ outcomes_clear('decisions') }}",
    ],
    post_hook=[
        "{{ outcomes_drop_orphans() }}",
        "{{ drop_state('identifiers') }}",
        "{{ remember_identifiers() }}",
        "{{ drop_state('watermarks') }}",
        "{{ outcomes_remember_watermarks() }}",
        "{{ outcomes_drop_work('affected') }}",
        "{{ outcomes_drop_work('dates') }}",
        "{{ outcomes_drop_work('decisions') }}",
        "{{ outcomes_drop_work('todo') }}",
    ],
) }}
{%- set memberships = adapter.get_relation(
    database=target.database, schema=target.schema, identifier='segment_memberships') %}
{%- set columns = adapter.get_columns_in_relation(memberships) | map(attribute='name') | list
    if memberships else [] %}
{%- set ledger = adapter.get_relation(
    database=target.database, schema=target.schema, identifier='delivery_ledger') %}
{%- set before_holdout = "'" ~ var('suppressed_before_holdout') | join("', '") ~ "'" %}
{#- the decisions this build attributes: every one, or those its pre-hooks chose (macros/outcomes.sql) #}
{%- set todo = memberships if outcomes_mode() == 'all' else outcomes_work('todo') %}
with

{% if memberships is none %}
decisions as (
    select
        cast(null as date) as as_of,
        {{ null_varchar() }} as member_id,
        {{ null_varchar() }} as segment,
        {{ null_varchar() }} as channel,
        {{ null_varchar() }} as status,
        {{ null_varchar() }} as reason,
        cast(null as boolean) as holdout,
        {{ null_varchar() }} as idempotency_key,
        {{ null_varchar() }} as message,
        {{ null_varchar() }} as outcome,
        cast(null as integer) as outcome_days,
        cast(null as timestamp) as planned_at
    where false
),
{% else %}
decisions as (
    select
        as_of,
        member_id,
        segment,
        channel,
        status,
        reason,
        holdout,
        idempotency_key,
        {%- if 'outcome_days' in columns %}
        message,
        coalesce(outcome, 'order') as outcome,
        coalesce(outcome_days, 14) as outcome_days
        {%- else %}
        {{ null_varchar() }} as message,
        'order' as outcome,
        14 as outcome_days
        {%- endif %},
        planned_at
    from {{ todo }}
),
{% endif %}

-- today's member of each decided member (merges and splits followed)
outcome_members as (select decided_member_id, member_id from {{ ref('segment_outcome_members') }}),
orders as (
    select * from {{ ref('fct_orders') }}
    where member_id is not null and status not in ('cancelled', 'refunded')
),
engagement as (select * from {{ ref('fct_member_daily_engagement') }}),
consent as (select * from {{ ref('stg_consent__events') }}),
identifiers as (select * from {{ ref('member_identifiers') }}),
{%- if ledger %}
delivered as (
    select idempotency_key, sent_at from {{ ledger }}
    where status = 'sent'
),
{%- else %}
delivered as (
    select
        {{ null_varchar() }} as idempotency_key,
        cast(null as {{ timestamptz_type() }}) as sent_at
    where false
),
{%- endif %}

resolved as (
    select
        decisions.*,
        coalesce(outcome_members.member_id, decisions.member_id) as outcome_member_id,
        decisions.as_of + decisions.outcome_days as window_end
    from decisions
    left join outcome_members on decisions.member_id = outcome_members.decided_member_id
),

-- the days the windows of this build's decisions cover: the facts outside them cannot count (years of
-- orders and activity would otherwise be joined to every decision of their member, then filtered out)
span as (
    select min(as_of) as first_day, max(window_end) as end_day from resolved
),
window_orders as (
    select orders.member_id, orders.order_date, orders.net_amount_cny
    from orders
    cross join span
    where orders.order_date >= span.first_day and orders.order_date < span.end_day
),
window_checkins as (
    select engagement.member_id, engagement.activity_date, engagement.checkins
    from engagement
    cross join span
    where
        engagement.checkins > 0
        and engagement.activity_date >= span.first_day and engagement.activity_date < span.end_day
),
-- marketing opt-outs in any of the member's id forms, found once per member rather than per decision
window_opt_outs as (
    select identifiers.member_id, consent.event_date
    from consent
    cross join span
    inner join identifiers
        on consent.id_type = identifiers.id_type and consent.id_value = identifiers.id_value
    where
        consent.scope = 'marketing'
        and not consent.granted
        and consent.event_date >= span.first_day and consent.event_date < span.end_day
),

order_outcomes as (
    select
        resolved.segment,
        resolved.as_of,
        resolved.member_id,
        count(*) as orders,
        sum(window_orders.net_amount_cny) as spend_cny
    from resolved
    inner join window_orders
        on
            resolved.outcome_member_id = window_orders.member_id
            and resolved.as_of <= window_orders.order_date
            and resolved.window_end > window_orders.order_date
    group by 1, 2, 3
),

checkin_outcomes as (
    select
        resolved.segment,
        resolved.as_of,
        resolved.member_id,
        cast(sum(window_checkins.checkins) as bigint) as checkins
    from resolved
    inner join window_checkins
        on
            resolved.outcome_member_id = window_checkins.member_id
            and resolved.as_of <= window_checkins.activity_date
            and resolved.window_end > window_checkins.activity_date
    group by 1, 2, 3
),

opt_outs as (
    select
        resolved.segment,
        resolved.as_of,
        resolved.member_id,
        min(window_opt_outs.event_date) as opted_out_on
    from resolved
    inner join window_opt_outs
        on
            resolved.outcome_member_id = window_opt_outs.member_id
            and resolved.as_of <= window_opt_outs.event_date
            and resolved.window_end > window_opt_outs.event_date
    group by 1, 2, 3
),

final as (
    select
        resolved.as_of,
        resolved.segment,
        resolved.member_id as decided_member_id,
        resolved.channel,
        resolved.message,
        resolved.status,
        resolved.reason,
        resolved.holdout,
        -- the holdout flag is drawn for every member; those suppressed before it count in neither arm
        case
            when resolved.status = 'suppressed' and resolved.reason in ({{ before_holdout }}) then 'ineligible'
            when resolved.holdout then 'holdout'
            else 'treated'
        end as arm,
        delivered.sent_at is not null as sent,
        delivered.sent_at,
        resolved.outcome,
        resolved.outcome_days,
        resolved.window_end,
        resolved.planned_at,
        current_timestamp as counted_at,
        coalesce(order_outcomes.orders, 0) as orders,
        coalesce(order_outcomes.spend_cny, 0) as spend_cny,
        coalesce(checkin_outcomes.checkins, 0) as checkins,
        opt_outs.opted_out_on is not null as opted_out,
        case
            when resolved.outcome = 'checkin' then coalesce(checkin_outcomes.checkins, 0) > 0
            else coalesce(order_outcomes.orders, 0) > 0
        end as responded
    from resolved
    left join order_outcomes using (segment, as_of, member_id)
    left join checkin_outcomes using (segment, as_of, member_id)
    left join opt_outs using (segment, as_of, member_id)
    left join delivered on resolved.idempotency_key = delivered.idempotency_key
)

select * from final
