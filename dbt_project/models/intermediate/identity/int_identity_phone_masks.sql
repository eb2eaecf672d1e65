-- One row per phone token and its masked form (138****1234), from every channel that saw the phone.
with

store_members as (select * from {{ ref('stg_store_pos__members') }}),
mp_users as (select * from {{ ref('stg_miniprogram__users') }}),
wecom_contacts as (select * from {{ ref('stg_wecom__contacts') }}),

final as (
    select phone_token, phone_masked from store_members
    where phone_token is not null
    union
    select phone_token, phone_masked from mp_users
    where phone_token is not null
    union
    select remark_phone_token, remark_phone_masked from wecom_contacts
    where remark_phone_token is not null
)

select * from final
