-- One row per member, tag group, value and validity range [valid_from, valid_to) (valid_to null: still
-- holds). A member's tags on day D: valid_from <= D and (valid_to is null or valid_to > D).
with

lifecycle as (select * from {{ ref('int_member_lifecycle_ranges') }}),
purchases as (select * from {{ ref('int_member_purchase_ranges') }}),
interests as (select * from {{ ref('int_member_interests') }}),
members as (select * from {{ ref('dim_member') }}),

tags as (
    select member_id, 'lifecycle' as tag_group, stage as tag_value, valid_from, valid_to, false as health_related
    from lifecycle
    union all
    select member_id, tag_group, tag_value, valid_from, valid_to, false from purchases
    union all
    select member_id, 'interest', interest, valid_from, null, health_related from interests
    union all
    select member_id, 'acquisition_channel', acquisition_channel, first_seen_on, null, false from members
),

final as (
    select
        tags.member_id,
        tags.tag_group,
        tags.tag_value,
        tags.valid_from,
        tags.valid_to,
        tags.health_related,
        -- Health-related tags may be used for marketing only with this on record.
        members.health_data_consent as health_consent_on_record
    from tags
    inner join members on tags.member_id = members.member_id
)

select * from final
