with

resolution as (
    select * from {{ ref('int_identity_resolution') }}
    where record = 'assignment'
),
nodes as (select * from {{ ref('int_identity_nodes') }}),

final as (
    select
        resolution.member_id,
        resolution.id_type,
        resolution.id_value,
        resolution.first_seen_on,
        nodes.first_channel,
        nodes.channels
    from resolution
    left join nodes on resolution.id_type = nodes.id_type and resolution.id_value = nodes.id_value
)

select * from final
