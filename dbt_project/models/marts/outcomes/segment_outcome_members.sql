-- Today's member for each member id a segment decision named (segment_memberships.member_id): the member
-- it was merged into; itself, while it exists; when its identifiers all left it in a split, the first member
-- they went to; else itself, with member_current false (its identifiers have all gone, with no merge or split
-- to follow: nobody's outcomes can be counted for it). segment_outcome_counts counts each decision's
-- outcomes on this member and the segment_outcomes view shows it. One row per decided member, built in
-- full each day: merged and vanished members are followed here, without rewriting tens of millions of
-- stored decisions.
{% set memberships = adapter.get_relation(
    database=target.database, schema=target.schema, identifier='segment_memberships') %}
with

decided as (
    {%- if memberships %}
    select distinct member_id as decided_member_id from {{ memberships }}
    {%- else %}
    select {{ null_varchar() }} as decided_member_id
    where false
    {%- endif %}
),
merged as (
    select retired_member_id, member_id from {{ ref('member_id_history') }}
    where change_type = 'merge'
),
split_successors as (
    {{ outcomes_split_successors() }}
),
members as (select member_id from {{ ref('dim_member') }}),

resolved as (
    select
        decided.decided_member_id,
        coalesce(merged.member_id, members.member_id, split_successors.member_id, decided.decided_member_id)
            as member_id
    from decided
    left join merged on decided.decided_member_id = merged.retired_member_id
    left join members on decided.decided_member_id = members.member_id
    left join split_successors on decided.decided_member_id = split_successors.split_from_member_id
)

select
    resolved.decided_member_id,
    resolved.member_id,
    current_members.member_id is not null as member_current
from resolved
left join members as current_members on resolved.member_id = current_members.member_id
