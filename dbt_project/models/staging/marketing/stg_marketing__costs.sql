-- One row per marketing spend line, its latest version: finance corrects a line by sending it again with a
-- later updated_at.
with

as_of as (
    select * from {{ landed_as_of('marketing', 'costs') }}
),

versioned as (
    select
        *,
        row_number() over (partition by cost_id order by updated_at desc, _loaded_at desc) as version_rank,
        count(*) over (partition by cost_id) as versions
    from as_of
),

final as (
    select
        cost_id,
        spend_date,
        channel,
        source_code,
        campaign,
        amount_cny,
        updated_at,
        versions,
        loaded_on
    from versioned
    where version_rank = 1
)

select * from final
