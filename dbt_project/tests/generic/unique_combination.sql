{% test unique_combination(model, columns, newest_by=none) %}
-- Rows whose combination of columns is not unique. With newest_by (a column holding when a build wrote
-- the row), only the combinations of the rows the last build wrote are checked, against the whole table:
-- for an incremental table whose key columns no build updates, the older rows were checked when written.
{%- if newest_by %}
with changed as (
    select distinct {{ columns | join(', ') }} from {{ model }}
    where {{ newest_by }} = (select max({{ newest_by }}) from {{ model }})
)
select {% for c in columns %}all_rows.{{ c }}, {% endfor %}count(*) as occurrences
from {{ model }} as all_rows
inner join changed on {% for c in columns %}all_rows.{{ c }} = changed.{{ c }}{{ " and " if not loop.last }}{% endfor %}
group by {% for c in columns %}all_rows.{{ c }}{{ ", " if not loop.last }}{% endfor %}
having count(*) > 1
{%- else %}
select {{ columns | join(', ') }}, count(*) as occurrences
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{%- endif %}
{% endtest %}
