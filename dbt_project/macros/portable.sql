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

{# The group's distinct non-null values as a sorted list (varchar[] on DuckDB, text[] on PostgreSQL). #}
{% macro sorted_set(expr) -%}
  array_agg(distinct {{ expr }} order by {{ expr }}) filter (where {{ expr }} is not null)
{%- endmacro %}

{# An empty list of strings. #}
{% macro empty_string_list() -%}
  cast(array[] as {{ string_list_type() }})
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

{#
  `expr` rounded to `digits` decimals, half away from zero on its decimal value, as a double. Rounding the
  double itself (DuckDB) turns 8.45 into 8.4 (its binary value is 8.4499…) and PostgreSQL rounds only
  numerics: both targets round the same decimal.
#}
{% macro round_double(expr, digits) -%}
  cast(round(cast({{ expr }} as decimal(18, 6)), {{ digits }}) as double precision)
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

{% macro duckdb__median(expr, where) -%}
  cast(quantile_cont({{ expr }}, 0.5){% if where %} filter (where {{ where }}){% endif %} as double precision)
{%- endmacro %}

{# numerator / denominator as a share rounded to four decimals; null when the denominator is 0 or null. #}
{% macro share(numerator, denominator, digits=4) -%}
  {{ round_double('1.0 * (' ~ numerator ~ ') / nullif(' ~ denominator ~ ', 0)', digits) }}
{%- endmacro %}
