-- One row per staff member (WeCom userid), their latest version: the directory sends a changed member
-- again with a later updated_at (a move to another store, a new role, leaving as active = false).
with

as_of as (
    select * from {{ landed_as_of('wecom', 'staff') }}
),

versioned as (
    select
        *,
        row_number() over (partition by userid order by updated_at desc, _loaded_at desc) as version_rank
    from as_of
),

final as (
    select
        userid as staff_id,
        role as staff_role,
        nullif(trim(store_id), '') as store_id,
        active as is_active,
        updated_at,
        loaded_on
    from versioned
    where version_rank = 1
)

select * from final
