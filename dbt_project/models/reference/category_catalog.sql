-- One row per product category: the interest it signals, its typical replenishment cycle in days (null
-- for devices, bought rarely), whether interest in it is health data, and its English and Chinese labels.
-- The rows come from the project variable `category_catalog` (dbt_project.yml), which the Python code
-- reads too.
-- A model rather than a seed: Cosmos runs dbt from a temporary copy of the project, where DuckDB's seed
-- loader cannot find CSVs.
with

final as (
    select * from (
        values
        {%- for row in var('category_catalog') %}
        (
            '{{ row[0] }}',
            '{{ row[1] }}',
            cast({{ 'null' if row[2] is none else row[2] }} as integer),
            {{ 'true' if row[3] else 'false' }},
            {{ 'true' if row[4] else 'false' }},
            '{{ row[5] }}',
            '{{ row[6] }}'
        ){{ ',' if not loop.last }}
        {%- endfor %}
    ) as catalog (category, interest, replenishment_days, is_device, health_related, label, label_zh)  -- noqa: AL05
)

select * from final
