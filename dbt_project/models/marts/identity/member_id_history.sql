with

merges as (select * from {{ ref('int_identity_resolution') }} where record = 'merge'),

final as (
    select
        retired_member_id,
        member_id,
        merged_into_member_id,
        'merge' as change_type,
        merged_on as changed_on
    from merges
)

select * from final
