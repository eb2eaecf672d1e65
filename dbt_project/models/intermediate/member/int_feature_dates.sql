-- The dates member_features is computed for: the feature_dates var, or the day after the as-of date, or
-- the day after the last day with activity.
with

{% if var('feature_dates') %}
final as (
    {%- set days = [] %}
    {%- for day in var('feature_dates') %}{% do days.append("cast('" ~ day ~ "' as date)") %}{% endfor %}
    select distinct {{ unnest(list_of(days)) }} as as_of_date
)
{% elif var('as_of_date') %}
final as (
    select cast('{{ var("as_of_date") }}' as date) + 1 as as_of_date
)
{% else %}
activity as (select * from {{ ref('int_member_activity_days') }}),

final as (
    select coalesce(max(activity_date), current_date) + 1 as as_of_date from activity
)
{% endif %}

select * from final
