-- Every landed version of every order of a known member, with the day it landed. An e-commerce order
-- changes status over time (paid, shipped, completed, refunded); a store receipt lands once. Point-in-time
-- features take, per as-of date, the newest version landed before it: a refund that landed later, or an
-- order that arrived late, is not known yet on that date.
with

ecom as (select * from {{ ref('stg_ecommerce__order_versions') }}),
store as (select * from {{ ref('stg_store_pos__orders') }}),
identifiers as (select * from {{ ref('member_identifiers') }}),

versions as (
    select
        'ecommerce:' || order_key as order_key,
        'buyer_id' as id_type,
        buyer_key as id_value,
        order_date,
        status,
        amount_cny as gross_amount_cny,
        updated_at,
        loaded_on
    from ecom
    union all
    select
        'store_pos:' || order_key, 'card_no', card_no, order_date, 'completed', amount_cny, ordered_at,
        first_seen_on
    from store
),

final as (
    select
        identifiers.member_id,
        versions.order_key,
        versions.order_date,
        versions.status in ('paid', 'shipped', 'completed') as is_purchase,
        case when versions.status in ('refunded', 'cancelled') then 0 else versions.gross_amount_cny end
            as net_amount_cny,
        versions.updated_at,
        versions.loaded_on
    from versions
    inner join identifiers on versions.id_type = identifiers.id_type and versions.id_value = identifiers.id_value
)

select * from final
