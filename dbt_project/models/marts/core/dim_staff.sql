-- One row per staff member in the directory: role, store, whether still active, and how many members
-- they own (dim_member.staff_owner). A store manager's scope in the ops API is the active staff of
-- their store.
with

staff as (
    select * from {{ ref('stg_wecom__staff') }}
),

owned as (
    select staff_owner as staff_id, count(*) as members_owned
    from {{ ref('dim_member') }}
    where staff_owner is not null
    group by staff_owner
),

final as (
    select
        staff.staff_id,
        staff.staff_role,
        staff.store_id,
        staff.is_active,
        coalesce(owned.members_owned, 0) as members_owned,
        staff.updated_at
    from staff
    left join owned on staff.staff_id = owned.staff_id
)

select * from final
