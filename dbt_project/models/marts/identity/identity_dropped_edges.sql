-- Strong evidence that the guards stopped, with the reason: what the identity report lists.
with

checked as (select * from {{ ref('int_identity_edges_checked') }}),

final as (
    select id_type_a, id_value_a, id_type_b, id_value_b, rule, first_seen_on, links_of_type, drop_reason
    from checked
    where drop_reason is not null
)

select * from final
