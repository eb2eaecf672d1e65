{#
  The landed rows of one channel table: the `landing` source (models/staging/_landing__sources.yml).
  `after`: only the partitions dated after that day (an incremental model's watermark). On DuckDB the
  filter is on the partition file's name, so the older partitions are not even opened.
#}
{% macro landed(channel, table, after=none) -%}
  {%- set relation = source('landing', channel ~ '__' ~ table) -%}
  {%- if after -%}
    (select * from {{ relation }} where {{ newer_partitions(channel, table, after) }}) as newer_partitions
  {%- else -%}
    {{ relation }}
  {%- endif -%}
{%- endmacro %}

{% macro newer_partitions(channel, table, after) -%}
  {{ return(adapter.dispatch('newer_partitions', 'memberflow')(channel, table, after)) }}
{%- endmacro %}

{#- (quoted as the adapter quotes: dbt-spark turns ANSI mode off, where a double-quoted name is a string) -#}
{% macro default__newer_partitions(channel, table, after) -%}
  {{ adapter.quote('_partition_dt') }} > cast('{{ after }}' as date)
{%- endmacro %}

{% macro duckdb__newer_partitions(channel, table, after) -%}
  {#- partition folders are dt=YYYY-MM-DD: every file of a later day sorts after "dt=<after>/~" -#}
  _landed_file > '{{ env_var("MEMBERFLOW_HOME") }}/landing/{{ channel }}/{{ table }}/dt={{ after }}/~'
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

{% macro spark__workspace_reference(name) -%}
  parquet.`{{ env_var("MEMBERFLOW_HOME") }}/reference/{{ name }}.parquet`
{%- endmacro %}

{# The China-local date a landed row arrived on (its partition's logical date). #}
{% macro loaded_on(column='_loaded_at') -%}
  {{ china_date(column) }}
{%- endmacro %}

{# The China-local date of a timestamp (with time zone). #}
{% macro china_date(column) -%}
  {{ return(adapter.dispatch('china_date', 'memberflow')(column)) }}
{%- endmacro %}

{% macro default__china_date(column) -%}
  cast(timezone('Asia/Shanghai', {{ column }}) as date)
{%- endmacro %}

{#- (Spark's timestamps are instants shown in the session's time zone, UTC) -#}
{% macro spark__china_date(column) -%}
  cast(from_utc_timestamp({{ column }}, 'Asia/Shanghai') as date)
{%- endmacro %}

{#
  Delete the rows of `relation` matching `where` (all of them without one), as a hook's SQL. Spark's
  Parquet tables have no row-level delete: the rows kept are copied aside and written back over the table
  (while the macro renders), and the hook itself is a no-op.
#}
{% macro delete_rows(relation, where=none) -%}
  {{ return(adapter.dispatch('delete_rows', 'memberflow')(relation, where)) }}
{%- endmacro %}

{% macro default__delete_rows(relation, where) -%}
  delete from {{ relation }}{% if where %} where {{ where }}{% endif %}
{%- endmacro %}

{% macro spark__delete_rows(relation, where) -%}
  {%- if not where -%}
    truncate table {{ relation }}
  {%- else -%}
    {%- if execute -%}
      {%- set kept = relation.incorporate(path={"identifier": relation.identifier ~ "__kept"}) -%}
      {%- do run_query("drop table if exists " ~ kept) -%}
      {%- do run_query("create table " ~ kept ~ " using parquet as select * from " ~ relation
          ~ " where (" ~ where ~ ") is not true") -%}
      {%- do run_query("insert overwrite table " ~ relation ~ " select * from " ~ kept) -%}
      {%- do run_query("drop table " ~ kept) -%}
    {%- endif -%}
    select 1
  {%- endif -%}
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
    {{ delete_rows(this) }}
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

{#
  The rows of a model dated on or before the report's last day (int_report_period.observed_through): what
  every report model counts from.
#}
{% macro up_to_report_day(model, date_column) -%}
  (
    select reported.* from {{ ref(model) }} as reported
    cross join {{ ref('int_report_period') }} as report_period
    where reported.{{ date_column }} <= report_period.observed_through
  ) as up_to_report_day
{%- endmacro %}
