{% test unique_combination(model, columns, newest_by=none, within=none) %}
-- Rows whose combination of columns is not unique. With newest_by (a column holding when a build wrote the
-- row) and within (one of the columns): only the rows sharing a `within` value with a row the last build
-- wrote are checked. For an incremental table whose key columns no build updates, a duplicate the last
-- build made has such a value, and the older rows were checked when they were written.
select {{ columns | join(', ') }}, count(*) as occurrences
from {{ model }}
{%- if newest_by %}
where {{ within }} in (
    select {{ within }} from {{ model }}
    where {{ newest_by }} = (select max({{ newest_by }}) from {{ model }})
)
{%- endif %}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
