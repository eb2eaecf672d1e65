-- One row per identifier seen in any channel, with the day it was first landed and the channel that
-- saw it first. An identifier carried by a record is dated by the first landed version that carried it
-- (a phone added to an old contact is first seen the day that version landed). Blocked values (test
-- numbers and the like) are not identifiers.
with

wecom_contacts as (select * from {{ ref('stg_wecom__contacts') }}),
mp_users as (select * from {{ ref('stg_miniprogram__users') }}),
live_views as (select * from {{ ref('stg_livestream__views') }}),
store_members as (select * from {{ ref('stg_store_pos__members') }}),
store_orders as (select * from {{ ref('stg_store_pos__orders') }}),
ecom_orders as (select * from {{ ref('stg_ecommerce__orders') }}),
policies as (select * from {{ ref('stg_insurance__policies') }}),
blocked as (select * from {{ ref('int_identity_blocked_values') }}),

sightings as (
    select 'external_userid' as id_type, external_userid as id_value, first_seen_on, 'wecom' as channel
    from wecom_contacts
    union all
    select 'unionid', unionid, unionid_first_seen_on, 'wecom' from wecom_contacts
    where unionid is not null
    union all
    select 'phone_token', remark_phone_token, remark_phone_first_seen_on, 'wecom'
    from wecom_contacts
    where remark_phone_token is not null
    union all
    select 'openid', openid_key, first_seen_on, 'miniprogram' from mp_users
    union all
    select 'unionid', unionid, unionid_first_seen_on, 'miniprogram' from mp_users
    where unionid is not null
    union all
    select 'phone_token', phone_token, phone_first_seen_on, 'miniprogram'
    from mp_users
    where phone_token is not null
    union all
    select 'openid', viewer_key, loaded_on, 'livestream' from live_views
    union all
    select 'unionid', viewer_unionid, loaded_on, 'livestream' from live_views
    where viewer_unionid is not null
    union all
    select 'card_no', card_no, first_seen_on, 'store_pos' from store_members
    union all
    select 'phone_token', phone_token, phone_first_seen_on, 'store_pos'
    from store_members
    where phone_token is not null
    union all
    select 'card_no', card_no, first_seen_on, 'store_pos' from store_orders
    where card_no is not null
    union all
    select 'buyer_id', buyer_key, first_seen_on, 'ecommerce' from ecom_orders
    union all
    select 'phone_token', member_phone_token, member_phone_first_seen_on, 'ecommerce'
    from ecom_orders
    where member_phone_token is not null
    union all
    select 'policy_id', policy_key, first_seen_on, 'insurance' from policies
    union all
    select 'phone_token', holder_phone_token, holder_phone_first_seen_on, 'insurance' from policies
),

first_sightings as (
    select
        id_type,
        id_value,
        min(first_seen_on) as first_seen_on,
        {{ first_by('channel', 'first_seen_on, channel') }} as first_channel,
        {{ sorted_set('channel') }} as channels
    from sightings
    group by id_type, id_value
),

final as (
    select first_sightings.*
    from first_sightings
    left join blocked
        on first_sightings.id_type = blocked.id_type and first_sightings.id_value = blocked.id_value
    where blocked.id_value is null
)

select * from final
