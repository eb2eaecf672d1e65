-- One row per member: first sighting, and the day the member was lost to marketing (opted out on any
-- channel, or removed the WeCom contact), if ever.
with

members as (select member_id, first_seen_on from {{ ref('dim_member') }}),
identifiers as (select * from {{ ref('member_identifiers') }}),
consent as (select * from {{ ref('stg_consent__events') }}),
contacts as (select * from {{ ref('stg_wecom__contacts') }}),

opt_outs as (
    select identifiers.member_id, min(consent.event_date) as opted_out_on
    from consent
    inner join identifiers on consent.id_type = identifiers.id_type and consent.id_value = identifiers.id_value
    where consent.scope = 'marketing' and not consent.granted
    group by identifiers.member_id
),

removals as (
    select identifiers.member_id, min({{ china_date('contacts.deleted_at') }}) as removed_on
    from contacts
    inner join identifiers
        on identifiers.id_type = 'external_userid' and contacts.external_userid = identifiers.id_value
    where contacts.is_removed
    group by identifiers.member_id
),

final as (
    select
        members.member_id,
        members.first_seen_on,
        least(opt_outs.opted_out_on, removals.removed_on) as lost_on
    from members
    left join opt_outs on members.member_id = opt_outs.member_id
    left join removals on members.member_id = removals.member_id
)

select * from final
