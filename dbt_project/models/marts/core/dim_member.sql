-- One row per member (person across channels): where they came from, who owns the relationship, which
-- channels know them and what they consented to.
with

identifiers as (select * from {{ ref('member_identifiers') }}),
contacts as (select * from {{ ref('stg_wecom__contacts') }}),
consent as (select * from {{ ref('stg_consent__events') }}),
phones as (select * from {{ ref('int_identity_phone_masks') }}),

by_member as (
    select
        member_id,
        min(first_seen_on) as first_seen_on,
        {{ first_by('first_channel', 'first_seen_on, first_channel') }} as acquisition_channel,
        count(*) as identifier_count,
        count(*) filter (where id_type = 'phone_token') as phone_count,
        count(*) filter (where id_type = 'external_userid') as wecom_contact_count,
        count(*) filter (where id_type = 'openid') as openid_count,
        count(*) filter (where id_type = 'card_no') as store_card_count,
        count(*) filter (where id_type = 'buyer_id') as ecommerce_account_count,
        count(*) filter (where id_type = 'policy_id') as policy_count,
        min(id_value) filter (where id_type = 'phone_token') as phone_token
    from identifiers
    group by member_id
),

member_channels as (
    select member_id, {{ sorted_set('channel') }} as channels_used
    from (select member_id, {{ unnest('channels') }} as channel from identifiers) as identifier_channels
    group by member_id
),

wecom as (
    select
        identifiers.member_id,
        {{ first_by('contacts.channel_code', 'contacts.added_at, contacts.staff_userid') }} as acquisition_code,
        {{ first_by('contacts.staff_userid', 'contacts.added_at, contacts.staff_userid', 'not contacts.is_removed') }}
            as staff_owner,
        bool_and(contacts.is_removed) as wecom_contact_removed
    from contacts
    inner join identifiers
        on identifiers.id_type = 'external_userid' and contacts.external_userid = identifiers.id_value
    group by identifiers.member_id
),

latest_answers as (
    -- Each identifier's latest answer per scope.
    select
        identifiers.member_id,
        consent.id_type,
        consent.id_value,
        consent.scope,
        -- the latest answer; ties go to the refusal
        {{ first_by('consent.granted', 'consent.event_time desc, consent.granted') }} as granted
    from consent
    inner join identifiers on consent.id_type = identifiers.id_type and consent.id_value = identifiers.id_value
    group by identifiers.member_id, consent.id_type, consent.id_value, consent.scope
),

consent_by_member as (
    -- A refusal on any channel applies to the member (PIPL): consent holds only when no identifier's
    -- latest answer is a refusal and at least one is a grant.
    select
        member_id,
        scope,
        bool_or(not granted) as refused,
        bool_or(granted) and not bool_or(not granted) as granted
    from latest_answers
    group by member_id, scope
),

masked_phones as (
    select phone_token, min(phone_masked) as phone_masked from phones
    group by phone_token
),

final as (
    select
        by_member.member_id,
        by_member.first_seen_on,
        by_member.acquisition_channel,
        wecom.acquisition_code,
        wecom.staff_owner,
        member_channels.channels_used,
        by_member.identifier_count,
        by_member.phone_count,
        by_member.wecom_contact_count,
        by_member.openid_count,
        by_member.store_card_count,
        by_member.ecommerce_account_count,
        by_member.policy_count,
        phones.phone_masked,
        coalesce(wecom.wecom_contact_removed, false) as wecom_contact_removed,
        coalesce(marketing.granted, false) as marketing_consent,
        coalesce(marketing.refused, false) as marketing_opt_out,
        coalesce(health.granted, false) as health_data_consent
    from by_member
    inner join member_channels on by_member.member_id = member_channels.member_id
    left join wecom on by_member.member_id = wecom.member_id
    left join consent_by_member as marketing
        on by_member.member_id = marketing.member_id and marketing.scope = 'marketing'
    left join consent_by_member as health
        on by_member.member_id = health.member_id and health.scope = 'health_data'
    left join masked_phones as phones
        on by_member.phone_token = phones.phone_token
)

select * from final
