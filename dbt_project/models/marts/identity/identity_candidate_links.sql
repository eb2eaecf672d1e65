-- Weak links between two members (e.g. a masked phone that matches exactly one known phone): for review,
-- never merged.
with

evidence as (
    select * from {{ ref('int_identity_evidence') }}
    where strength = 'weak'
),
identifiers as (select * from {{ ref('member_identifiers') }}),

final as (
    select
        member_a.member_id,
        member_b.member_id as candidate_member_id,
        evidence.rule,
        evidence.id_type_a,
        evidence.id_value_a,
        evidence.id_type_b,
        evidence.id_value_b,
        evidence.first_seen_on
    from evidence
    inner join identifiers as member_a
        on evidence.id_type_b = member_a.id_type and evidence.id_value_b = member_a.id_value
    inner join identifiers as member_b
        on evidence.id_type_a = member_b.id_type and evidence.id_value_a = member_b.id_value
    where member_a.member_id != member_b.member_id
)

select * from final
