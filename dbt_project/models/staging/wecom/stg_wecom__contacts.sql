with

as_of as (
    select * from {{ landed_as_of('wecom', 'contacts') }}
),

versioned as (
    select
        *,
        min(loaded_on) over (partition by external_userid, staff_userid) as first_seen_on,
        -- A link is as old as the first landed version asserting it: a phone remarked on a contact
        -- months later is evidence of that later day, not of the day the contact was added.
        min(loaded_on) over (partition by external_userid, staff_userid, unionid) as unionid_first_seen_on,
        min(loaded_on) over (partition by external_userid, staff_userid, phone_token) as remark_phone_first_seen_on,
        row_number() over (
            partition by external_userid, staff_userid order by updated_at desc, _loaded_at desc
        ) as version_rank
    from as_of
),

final as (
    select
        external_userid,
        unionid,
        staff_userid,
        add_time as added_at,
        add_way,
        state as channel_code,
        phone_token as remark_phone_token,
        phone_masked as remark_phone_masked,
        deleted_time as deleted_at,
        deleted_time is not null as is_removed,
        updated_at,
        first_seen_on,
        unionid_first_seen_on,
        remark_phone_first_seen_on
    from versioned
    where version_rank = 1
)

select * from final
