{#
  The landed rows of one channel table, as a relation. On DuckDB, the Parquet itself: every dated partition
  plus the table's empty schema file, so a channel that has never delivered is an empty relation with the
  right columns, not an error. Elsewhere, the raw table memberflow.postgres loads before the build.
#}
{% macro landed(channel, table) -%}
  {{ return(adapter.dispatch('landed', 'memberflow')(channel, table)) }}
{%- endmacro %}

{% macro default__landed(channel, table) -%}
  {{ raw_relation(channel ~ '__' ~ table) }}
{%- endmacro %}

{% macro duckdb__landed(channel, table) -%}
  {%- set home = env_var('MEMBERFLOW_HOME') -%}
  {%- set pattern = home ~ '/landing/' ~ channel ~ '/' ~ table ~ '/dt=*/part-0.parquet' -%}
  {%- set schema_file = home ~ '/landing/_schemas/' ~ channel ~ '.' ~ table ~ '.parquet' -%}
  {%- set found = 0 -%}
  {%- if execute -%}
    {%- set found = run_query("select count(*) from glob('" ~ pattern ~ "')").columns[0].values()[0] -%}
  {%- endif -%}
  read_parquet(['{{ schema_file }}'{% if found > 0 %}, '{{ pattern }}'{% endif %}], union_by_name = true)
{%- endmacro %}

{#
  A table memberflow loads into the warehouse's raw schema (<schema>_raw) before a build on targets that
  cannot read the workspace's files (memberflow.postgres).
#}
{% macro raw_relation(name) -%}
  {{ target.schema }}_raw.{{ name }}
{%- endmacro %}

{# Reference data memberflow writes into the workspace before a build (e.g. blocked identifiers). #}
{% macro workspace_reference(name) -%}
  {{ return(adapter.dispatch('workspace_reference', 'memberflow')(name)) }}
{%- endmacro %}

{% macro default__workspace_reference(name) -%}
  {{ raw_relation('reference__' ~ name) }}
{%- endmacro %}

{% macro duckdb__workspace_reference(name) -%}
  read_parquet('{{ env_var("MEMBERFLOW_HOME") }}/reference/{{ name }}.parquet')
{%- endmacro %}

{# The China-local date a landed row arrived on (its partition's logical date). #}
{% macro loaded_on(column='_loaded_at') -%}
  cast(timezone('Asia/Shanghai', {{ column }}) as date)
{%- endmacro %}

{# Keep rows landed on or before the as-of date, when one is set. #}
{% macro as_of_filter(column='loaded_on') -%}
  {%- if var('as_of_date') -%}
    {{ column }} <= cast('{{ var("as_of_date") }}' as date)
  {%- else -%}
    true
  {%- endif -%}
{%- endmacro %}

{#
  The landed rows of a table with their `loaded_on` day, limited to rows landed on or before the
  as_of_date var when it is set: what every staging model starts from.
#}
{% macro landed_as_of(channel, table) -%}
  (
    select *, {{ loaded_on() }} as loaded_on
    from {{ landed(channel, table) }}
    where {{ as_of_filter(loaded_on()) }}
  ) as landed_rows
{%- endmacro %}
