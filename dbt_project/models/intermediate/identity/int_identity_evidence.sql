-- Every link between two identifiers that some channel asserts, with the rule behind it, its strength
-- and the day it was first landed: the day the first version of a record asserting it landed, so a link
-- added to an old record later (a phone remarked on a contact weeks after) is that later day's evidence.
-- Side a is the shared key (phone token or unionid), side b an account.
-- Strong links are merged; weak ones are only candidates.
with

wecom_contacts as (select * from {{ ref('stg_wecom__contacts') }}),
mp_users as (select * from {{ ref('stg_miniprogram__users') }}),
live_views as (select * from {{ ref('stg_livestream__views') }}),
store_members as (select * from {{ ref('stg_store_pos__members') }}),
ecom_orders as (select * from {{ ref('stg_ecommerce__orders') }}),
policies as (select * from {{ ref('stg_insurance__policies') }}),
phone_masks as (select * from {{ ref('int_identity_phone_masks') }}),

strong_links as (
    select
        'unionid' as id_type_a, unionid as id_value_a, 'openid' as id_type_b, openid_key as id_value_b,
        'mp_unionid' as rule, unionid_first_seen_on as first_seen_on
    from mp_users
    where unionid is not null
    union all
    select 'unionid', unionid, 'external_userid', external_userid, 'wecom_unionid', unionid_first_seen_on
    from wecom_contacts
    where unionid is not null
    union all
    select 'unionid', viewer_unionid, 'openid', viewer_key, 'live_unionid', loaded_on
    from live_views
    where viewer_unionid is not null
    union all
    select 'phone_token', phone_token, 'openid', openid_key, 'mp_phone', phone_first_seen_on
    from mp_users
    where phone_token is not null
    union all
    select
        'phone_token', remark_phone_token, 'external_userid', external_userid, 'wecom_remark_phone',
        remark_phone_first_seen_on
    from wecom_contacts
    where remark_phone_token is not null
    union all
    select 'phone_token', phone_token, 'card_no', card_no, 'store_card_phone', phone_first_seen_on
    from store_members
    where phone_token is not null
    union all
    select
        'phone_token', member_phone_token, 'buyer_id', buyer_key, 'ecommerce_member_phone',
        member_phone_first_seen_on
    from ecom_orders
    where member_phone_token is not null
    union all
    select
        'phone_token', holder_phone_token, 'policy_id', policy_key, 'insurance_holder_phone',
        holder_phone_first_seen_on
    from policies
),

-- A masked phone (138****1234) narrows a buyer down to phones sharing those 7 digits: a hint for a
-- person to review, never proof. Only unambiguous matches are kept as candidates.
unambiguous_masks as (
    select phone_masked, min(phone_token) as phone_token
    from phone_masks
    group by phone_masked
    having count(distinct phone_token) = 1
),

weak_links as (
    select distinct
        'phone_token' as id_type_a,
        unambiguous_masks.phone_token as id_value_a,
        'buyer_id' as id_type_b,
        ecom_orders.buyer_key as id_value_b,
        'ecommerce_masked_phone' as rule,
        min(ecom_orders.first_seen_on) over (partition by ecom_orders.buyer_key, unambiguous_masks.phone_token)
            as first_seen_on
    from ecom_orders
    inner join unambiguous_masks on ecom_orders.mobile_masked = unambiguous_masks.phone_masked
),

final as (
    select id_type_a, id_value_a, id_type_b, id_value_b, rule, 'strong' as strength, min(first_seen_on) as first_seen_on
    from strong_links
    group by id_type_a, id_value_a, id_type_b, id_value_b, rule
    union all
    select id_type_a, id_value_a, id_type_b, id_value_b, rule, 'weak', min(first_seen_on)
    from weak_links
    group by id_type_a, id_value_a, id_type_b, id_value_b, rule
)

select * from final
