{#
  The landed rows of one channel table, as a relation. On DuckDB, the Parquet itself: every dated partition
  plus the table's empty schema file, so a channel that has never delivered is an empty relation with the
  right columns, not an error. Elsewhere, the raw table memberflow.postgres loads before the build.
#}
{#
  `after`: only the partitions dated after that day (an incremental model's watermark), read without
  touching the older ones.
#}
{% macro landed(channel, table, after=none) -%}
  {{ return(adapter.dispatch('landed', 'memberflow')(channel, table, after)) }}
{%- endmacro %}

{% macro default__landed(channel, table, after=none) -%}
  {%- if after -%}
    (select * from {{ raw_relation(channel ~ '__' ~ table) }} where "_partition_dt" > cast('{{ after }}' as date)) as newer_partitions
  {%- else -%}
    {{ raw_relation(channel ~ '__' ~ table) }}
  {%- endif -%}
{%- endmacro %}

{% macro duckdb__landed(channel, table, after=none) -%}
  {%- set home = env_var('MEMBERFLOW_HOME') -%}
  {%- set pattern = home ~ '/landing/' ~ channel ~ '/' ~ table ~ '/dt=*/part-0.parquet' -%}
  {%- set schema_file = home ~ '/landing/_schemas/' ~ channel ~ '.' ~ table ~ '.parquet' -%}
  {%- set files = [] -%}
  {%- if execute and after -%}
    {%- set found = run_query("select file from glob('" ~ pattern ~ "') where regexp_extract(file, '/dt=([0-9-]+)/', 1) > '" ~ after ~ "' order by file") -%}
    {%- set files = found.columns[0].values() | list -%}
  {%- elif execute -%}
    {%- set found = run_query("select count(*) from glob('" ~ pattern ~ "')").columns[0].values()[0] -%}
    {%- set files = [pattern] if found > 0 else [] -%}
  {%- endif -%}
  read_parquet(['{{ schema_file }}'{% for f in files %}, '{{ f }}'{% endfor %}], union_by_name = true)
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
{% macro landed_as_of(channel, table, after=none) -%}
  (
    select *, {{ loaded_on() }} as loaded_on
    from {{ landed(channel, table, after) }}
    where {{ as_of_filter(loaded_on()) }}
  ) as landed_rows
{%- endmacro %}

{#
  Incremental staging of a landed event table (memberflow.transform.plan_incremental_build decides, before
  each build, whether the landing only grew by newer partitions since the last build).

  incremental_rebuild: true when this build must read every partition again: an as_of_date build, no
  decision written, or a decision to rebuild (re-landed, withdrawn or late partitions; changed SQL).
  incremental_after: the day after which partitions are new to the model (its newest loaded_on), or none
  for a build from every partition.
  clear_for_rebuild: the pre-hook that empties the model's table before a rebuild appends everything.
#}
{% macro incremental_rebuild(channel, table) -%}
  {%- if not execute -%}{{ return(false) }}{%- endif -%}
  {%- if var('as_of_date') -%}{{ return(true) }}{%- endif -%}
  {%- set decided = run_query("select rebuild from " ~ workspace_reference('incremental_build')
      ~ " where relation = '" ~ channel ~ "." ~ table ~ "'") -%}
  {%- set values = decided.columns[0].values() | list -%}
  {{ return(values | length == 0 or values[0]) }}
{%- endmacro %}

{% macro incremental_after(channel, table) -%}
  {%- if not execute or not is_incremental() or incremental_rebuild(channel, table) -%}
    {{ return(none) }}
  {%- endif -%}
  {%- set newest = run_query("select max(loaded_on) from " ~ this).columns[0].values()[0] -%}
  {{ return(newest.isoformat() if newest else none) }}
{%- endmacro %}

{# incremental_rebuild over several landed tables ("channel.table"): true when any of them is rebuilt. #}
{% macro any_rebuild(relations) -%}
  {%- for relation in relations -%}
    {%- set parts = relation.split('.') -%}
    {%- if incremental_rebuild(parts[0], parts[1]) -%}{{ return(true) }}{%- endif -%}
  {%- endfor -%}
  {{ return(false) }}
{%- endmacro %}

{% macro clear_for_rebuild_any(relations) -%}
  {%- if is_incremental() and any_rebuild(relations) -%}
    delete from {{ this }}
  {%- endif -%}
{%- endmacro %}

{% macro clear_for_rebuild(channel, table) -%}
  {{ clear_for_rebuild_any([channel ~ '.' ~ table]) }}
{%- endmacro %}

{#
  Every quarantined landing row (extract writes them per channel table and day). On DuckDB the Parquet
  under $MEMBERFLOW_HOME/quarantine, or an empty relation with the same columns before anything was landed;
  elsewhere the raw table memberflow.postgres loads before the build.
#}
{% macro quarantined_rows() -%}
  {{ return(adapter.dispatch('quarantined_rows', 'memberflow')()) }}
{%- endmacro %}

{% macro default__quarantined_rows() -%}
  {{ raw_relation('quarantine') }}
{%- endmacro %}

{% macro duckdb__quarantined_rows() -%}
  {%- set pattern = env_var('MEMBERFLOW_HOME') ~ '/quarantine/*/*/dt=*/part-0.parquet' -%}
  {%- set found = 0 -%}
  {%- if execute -%}
    {%- set found = run_query("select count(*) from glob('" ~ pattern ~ "')").columns[0].values()[0] -%}
  {%- endif -%}
  {%- if found > 0 -%}
    read_parquet('{{ pattern }}')
  {%- else -%}
    (
      select
        null::varchar as channel, null::varchar as "table", null::date as dt, null::varchar as source_file,
        null::bigint as row_number, null::varchar as reason, null::varchar as detail, null::varchar as raw,
        null::timestamptz as _loaded_at
      where false
    ) as nothing_quarantined
  {%- endif -%}
{%- endmacro %}
