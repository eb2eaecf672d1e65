{#
  SQL that DuckDB and PostgreSQL spell differently. Models use these (or dbt's own cross-database macros,
  e.g. dbt.datediff) so the project builds on both targets; the DuckDB spellings stay the fast ones.
#}

{#
  The value of `expr` on the group's first row by `order_by` (a null value included, like DuckDB's first),
  among the rows matching `where` when given. For "last", reverse the order.
#}
{% macro first_by(expr, order_by, where=none) -%}
  {{ return(adapter.dispatch('first_by', 'memberflow')(expr, order_by, where)) }}
{%- endmacro %}

{% macro default__first_by(expr, order_by, where) -%}
  (array_agg({{ expr }} order by {{ order_by }}){% if where %} filter (where {{ where }}){% endif %})[1]
{%- endmacro %}

{% macro duckdb__first_by(expr, order_by, where) -%}
  first({{ expr }} order by {{ order_by }}){% if where %} filter (where {{ where }}){% endif %}
{%- endmacro %}

{#- Spark has no ordered aggregate: the group's (keys, value) pairs sorted by a comparator of the keys in
    order, each ascending or descending, nulls last (as DuckDB orders), and the first pair's value.
    `order_by` is a comma-separated list of expressions, each optionally followed by asc or desc. -#}
{% macro spark__first_by(expr, order_by, where) -%}
  {%- set keys = [] -%}
  {%- for part in order_by.split(',') -%}
    {%- set words = part.strip().split(' ') -%}
    {%- if words[-1] | lower in ('asc', 'desc') -%}
      {%- do keys.append((words[:-1] | join(' '), words[-1] | lower == 'desc')) -%}
    {%- else -%}
      {%- do keys.append((part.strip(), false)) -%}
    {%- endif -%}
  {%- endfor -%}
  try_element_at(array_sort(
    collect_list(struct(
      {%- for key in keys %}{{ key[0] }} as k{{ loop.index }}, {% endfor %}{{ expr }} as v
    )){% if where %} filter (where {{ where }}){% endif %},
    (l, r) -> case
      {%- for key in keys %}
      when l.k{{ loop.index }} is null and r.k{{ loop.index }} is not null then 1
      when l.k{{ loop.index }} is not null and r.k{{ loop.index }} is null then -1
      when l.k{{ loop.index }} < r.k{{ loop.index }} then {{ 1 if key[1] else -1 }}
      when l.k{{ loop.index }} > r.k{{ loop.index }} then {{ -1 if key[1] else 1 }}
      {%- endfor %}
      else 0 end
  ), 1).v
{%- endmacro %}

{# The group's distinct non-null values as a sorted list (varchar[] on DuckDB, text[] on PostgreSQL). #}
{% macro sorted_set(expr) -%}
  {{ return(adapter.dispatch('sorted_set', 'memberflow')(expr)) }}
{%- endmacro %}

{% macro default__sorted_set(expr) -%}
  array_agg(distinct {{ expr }} order by {{ expr }}) filter (where {{ expr }} is not null)
{%- endmacro %}

{#- (null when the group has no value, as the filtered array_agg) -#}
{% macro spark__sorted_set(expr) -%}
  case when count({{ expr }}) > 0 then array_sort(collect_set({{ expr }})) end
{%- endmacro %}

{# An empty list of strings. #}
{% macro empty_string_list() -%}
  {{ return(adapter.dispatch('empty_string_list', 'memberflow')()) }}
{%- endmacro %}

{% macro default__empty_string_list() -%}
  cast(array[] as {{ string_list_type() }})
{%- endmacro %}

{% macro spark__empty_string_list() -%}
  cast(array() as {{ string_list_type() }})
{%- endmacro %}

{# The group's values of `expr` as a list in ascending order (its nulls may be left out). #}
{% macro ordered_list(expr) -%}
  {{ return(adapter.dispatch('ordered_list', 'memberflow')(expr)) }}
{%- endmacro %}

{% macro default__ordered_list(expr) -%}
  array_agg({{ expr }} order by {{ expr }})
{%- endmacro %}

{% macro spark__ordered_list(expr) -%}
  array_sort(collect_list({{ expr }}))
{%- endmacro %}

{# One row per element of a list column (in a select list). #}
{% macro unnest(expr) -%}
  {{ return(adapter.dispatch('unnest', 'memberflow')(expr)) }}
{%- endmacro %}

{% macro default__unnest(expr) -%}
  unnest({{ expr }})
{%- endmacro %}

{% macro spark__unnest(expr) -%}
  explode({{ expr }})
{%- endmacro %}

{# A list literal of SQL expressions. #}
{% macro list_of(items) -%}
  {{ return(adapter.dispatch('list_of', 'memberflow')(items)) }}
{%- endmacro %}

{% macro default__list_of(items) -%}
  [{{ items | join(', ') }}]
{%- endmacro %}

{% macro spark__list_of(items) -%}
  array({{ items | join(', ') }})
{%- endmacro %}

{# Whole days from `start` to `end` (two dates) as an integer: end - start. #}
{% macro days_between(start, end) -%}
  {{ return(adapter.dispatch('days_between', 'memberflow')(start, end)) }}
{%- endmacro %}

{% macro default__days_between(start, end) -%}
  {{ end }} - {{ start }}
{%- endmacro %}

{#- (Spark's date - date is an interval) -#}
{% macro spark__days_between(start, end) -%}
  datediff({{ end }}, {{ start }})
{%- endmacro %}

{#
  `numerator` / `denominator` (a decimal literal such as 60.0) computed as a double, as DuckDB divides.
  Spark divides a number by a decimal literal in decimals of scale 6: the quotient is rounded there, and sums
  of such rounded quotients drift from DuckDB's by millionths, enough to flip a later rounding.
#}
{% macro divided(numerator, denominator) -%}
  {{ return(adapter.dispatch('divided', 'memberflow')(numerator, denominator)) }}
{%- endmacro %}

{% macro default__divided(numerator, denominator) -%}
  {{ numerator }} / {{ denominator }}
{%- endmacro %}

{% macro spark__divided(numerator, denominator) -%}
  cast({{ numerator }} as double) / {{ denominator }}
{%- endmacro %}

{# A null string, typed as the contracts declare it (varchar; Spark only knows string). #}
{% macro null_varchar() -%}
  {{ return(adapter.dispatch('null_varchar', 'memberflow')()) }}
{%- endmacro %}

{% macro default__null_varchar() -%}
  cast(null as varchar)
{%- endmacro %}

{% macro spark__null_varchar() -%}
  cast(null as string)
{%- endmacro %}

{#
  Spark spells the types the contracts declare (dbt's cast builds a contract's empty schema with them)
  its own way: varchar is string, lists are array<...>, double precision is double.
#}
{% macro spark__cast(field, type) -%}
  {%- set spelled = type | trim | lower -%}
  {%- set spellings = {'varchar': 'string', 'text': 'string', 'varchar[]': 'array<string>',
                       'text[]': 'array<string>', 'double precision': 'double', 'integer': 'int'} -%}
  cast({{ field }} as {{ spellings.get(spelled, type) }})
{%- endmacro %}

{% macro string_list_type() -%}
  {{ return(adapter.dispatch('string_list_type', 'memberflow')()) }}
{%- endmacro %}

{% macro default__string_list_type() -%}
  text[]
{%- endmacro %}

{% macro duckdb__string_list_type() -%}
  varchar[]
{%- endmacro %}

{% macro spark__string_list_type() -%}
  array<string>
{%- endmacro %}

{# The string type contracts declare (varchar on DuckDB, text on PostgreSQL). #}
{% macro string_type() -%}
  {{ return(adapter.dispatch('string_type', 'memberflow')()) }}
{%- endmacro %}

{% macro default__string_type() -%}
  text
{%- endmacro %}

{% macro duckdb__string_type() -%}
  varchar
{%- endmacro %}

{% macro spark__string_type() -%}
  string
{%- endmacro %}

{#
  `expr` rounded to `digits` decimals, half away from zero on its decimal value, as a double. Rounding the
  double itself (DuckDB) turns 8.45 into 8.4 (its binary value is 8.4499…) and PostgreSQL rounds only
  numerics: both targets round the same decimal.
#}
{% macro round_double(expr, digits) -%}
  cast(round(cast({{ expr }} as decimal(18, 6)), {{ digits }}) as {{ double_type() }})
{%- endmacro %}

{# A timestamp with time zone (Spark's timestamp is one: an instant, shown in the session's zone). #}
{% macro timestamptz_type() -%}
  {{ return(adapter.dispatch('timestamptz_type', 'memberflow')()) }}
{%- endmacro %}

{% macro default__timestamptz_type() -%}
  timestamptz
{%- endmacro %}

{% macro spark__timestamptz_type() -%}
  timestamp
{%- endmacro %}

{# The double type (Spark has no "double precision"). #}
{% macro double_type() -%}
  {{ return(adapter.dispatch('double_type', 'memberflow')()) }}
{%- endmacro %}

{% macro default__double_type() -%}
  double precision
{%- endmacro %}

{% macro spark__double_type() -%}
  double
{%- endmacro %}

{# Refresh the planner statistics of the model just built (PostgreSQL); nothing on DuckDB. #}
{% macro analyze_relation() -%}
  {{ return(adapter.dispatch('analyze_relation', 'memberflow')()) }}
{%- endmacro %}

{% macro default__analyze_relation() -%}
  {%- if model.config.materialized in ('table', 'incremental') -%}analyze {{ this }}{%- endif -%}
{%- endmacro %}

{% macro duckdb__analyze_relation() -%}
{%- endmacro %}

{% macro spark__analyze_relation() -%}
{%- endmacro %}

{# The group's median of a numeric expression (interpolated), over the rows matching `where`, as a double. #}
{% macro median(expr, where=none) -%}
  {{ return(adapter.dispatch('median', 'memberflow')(expr, where)) }}
{%- endmacro %}

{% macro default__median(expr, where) -%}
  cast(
    percentile_cont(0.5) within group (order by {{ expr }}){% if where %} filter (where {{ where }}){% endif %}
    as double precision
  )
{%- endmacro %}

{% macro spark__median(expr, where) -%}
  cast(percentile({{ expr }}, 0.5){% if where %} filter (where {{ where }}){% endif %} as double)
{%- endmacro %}

{% macro duckdb__median(expr, where) -%}
  cast(quantile_cont({{ expr }}, 0.5){% if where %} filter (where {{ where }}){% endif %} as double precision)
{%- endmacro %}

{# numerator / denominator as a share rounded to four decimals; null when the denominator is 0 or null. #}
{% macro share(numerator, denominator, digits=4) -%}
  {{ round_double('1.0 * (' ~ numerator ~ ') / nullif(' ~ denominator ~ ', 0)', digits) }}
{%- endmacro %}

{# member_features on Spark (append): the dates this build computes leave the table first. #}
{% macro features_clear_dates() -%}
  {%- if is_incremental() -%}
    {{ delete_rows(this, 'as_of_date in (select as_of_date from ' ~ ref('int_feature_dates') ~ ')') }}
  {%- else -%}
    select 1
  {%- endif -%}
{%- endmacro %}
