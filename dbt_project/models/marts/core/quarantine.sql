-- One row per landing row that broke its channel's contract, with the reason: what extract set aside
-- instead of landing (DESIGN §3: read = landed + quarantined). Phones in the raw text are redacted.
with

quarantined as (
    select * from {{ quarantined_rows() }}
),

final as (
    select
        channel,
        -- quoted: a reserved word on PostgreSQL (as the adapter quotes: Spark's dbt runs with ANSI mode off,
        -- where a double-quoted name is a string literal)
        {{ adapter.quote('table') }},
        dt as partition_date,
        source_file,
        row_number,
        reason,
        detail,
        raw,
        _loaded_at as loaded_at
    from quarantined
)

select * from final
