-- Identifier values that must never link anyone: test numbers, all-same digits, a brand's own hotline.
-- memberflow writes the list (as tokens) into the workspace before each build.
with

source as (
    select * from {{ workspace_reference('blocked_identifiers') }}
),

final as (
    select distinct id_type, id_value, reason from source
)

select * from final
