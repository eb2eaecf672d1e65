-- Strong evidence with the guard that stops it, if any: a blocked value on either side, or a shared key
-- that links more identifiers of one type than the cap allows (a clerk's phone on many walk-in cards).
{% set caps = var('identity_caps') %}
with

evidence as (
    select * from {{ ref('int_identity_evidence') }}
    where strength = 'strong'
),
blocked as (select * from {{ ref('int_identity_blocked_values') }}),

links_per_key as (
    select id_type_a, id_value_a, id_type_b, count(distinct id_value_b) as links_of_type
    from evidence
    group by id_type_a, id_value_a, id_type_b
),

fan_out as (
    select
        evidence.*,
        links_per_key.links_of_type,
        case evidence.id_type_b
            {%- for id_type, cap in caps.items() %}
            when '{{ id_type }}' then {{ cap | int }}
            {%- endfor %}
        end as cap
    from evidence
    inner join links_per_key
        on
            evidence.id_type_a = links_per_key.id_type_a
            and evidence.id_value_a = links_per_key.id_value_a
            and evidence.id_type_b = links_per_key.id_type_b
),

final as (
    select
        fan_out.id_type_a,
        fan_out.id_value_a,
        fan_out.id_type_b,
        fan_out.id_value_b,
        fan_out.rule,
        fan_out.first_seen_on,
        fan_out.links_of_type,
        case
            when blocked_a.id_value is not null or blocked_b.id_value is not null then 'blocked_value'
            when fan_out.links_of_type > fan_out.cap then 'cap_exceeded'
        end as drop_reason
    from fan_out
    left join blocked as blocked_a
        on fan_out.id_type_a = blocked_a.id_type and fan_out.id_value_a = blocked_a.id_value
    left join blocked as blocked_b
        on fan_out.id_type_b = blocked_b.id_type and fan_out.id_value_b = blocked_b.id_value
)

select * from final
