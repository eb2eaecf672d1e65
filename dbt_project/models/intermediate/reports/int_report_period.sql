-- The last day the report models count: the as-of date when the build has one, else the last day with any
-- member activity (the day member_features is computed after). A window that ends after it is still open.
with

{% if var('as_of_date') %}
final as (
    select cast('{{ var("as_of_date") }}' as date) as observed_through
)
{% else %}
activity as (select * from {{ ref('int_member_activity_days') }}),

final as (
    select coalesce(max(activity_date), current_date) as observed_through from activity
)
{% endif %}

select * from final
