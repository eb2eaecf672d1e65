with

merged_members as (
    select * from {{ ref('int_identity_resolution') }}
    where record = 'merge'
),
split_members as (
    select * from {{ ref('int_identity_resolution') }}
    where record = 'split'
),

final as (
    select
        retired_member_id,
        member_id,
        merged_into_member_id,
        {{ null_varchar() }} as split_from_member_id,
        'merge' as change_type,
        merged_on as changed_on
    from merged_members
    union all
    select
        {{ null_varchar() }},
        member_id,
        {{ null_varchar() }},
        split_from_member_id,
        'split',
        split_on
    from split_members
)

select * from final
