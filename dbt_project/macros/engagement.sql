{#
  Incremental daily engagement (int_source_daily_activity, then fct_member_daily_engagement).

  int_source_daily_activity is keyed by channel identifiers and only grows: each build adds, per source,
  the rows landed after the newest landing day it holds. fct_member_daily_engagement is keyed by member, and
  member ids come from today's identity, so a build recomputes every day of the members it affects and
  leaves the rest alone. Affected are the members:
  - with activity landed after the last build (per source) or an order that changed after it;
  - on either side of an identifier whose member changed since the last build (merges, splits, links,
    blocked identifiers), compared with the identifiers that build saw.
  The last build's identifiers and watermarks are kept beside the table by its post-hooks
  (macros/changes.sql); <table>__affected lives only while a build runs.
  Both rebuild from scratch whenever an event staging table or the landed orders were rebuilt or changed
  (memberflow.transform.plan_incremental_build), on an as-of build, and when the kept state is missing.
#}

{% macro engagement_sources() -%}
  {{ return(['wecom.group_events', 'miniprogram.events', 'livestream.views']) }}
{%- endmacro %}

{% macro engagement_order_sources() -%}
  {{ return(['ecommerce.orders', 'store_pos.orders']) }}
{%- endmacro %}

{# The identifier types whose members the fact's rows belong to (events and orders). #}
{% macro engagement_id_types() -%}
  ('external_userid', 'openid', 'buyer_id', 'card_no')
{%- endmacro %}

{# source -> the newest landing day held, for a build that adds; none when the build starts over. #}
{% macro source_activity_after() -%}
  {%- if not execute or not is_incremental() or any_rebuild(engagement_sources()) -%}
    {{ return(none) }}
  {%- endif -%}
  {%- set found = run_query("select source, max(loaded_on) from " ~ this ~ " group by source") -%}
  {%- set after = {} -%}
  {%- for row in found.rows -%}
    {%- do after.update({row[0]: row[1].isoformat()}) -%}
  {%- endfor -%}
  {{ return(after) }}
{%- endmacro %}

{% macro after_watermark(after, source) -%}
  {%- if after is not none and after.get(source) -%}
    where loaded_on > cast('{{ after[source] }}' as date)
  {%- endif -%}
{%- endmacro %}

{% macro engagement_rebuild() -%}
  {%- if not execute or not is_incremental() or var('as_of_date') -%}{{ return(true) }}{%- endif -%}
  {%- if not has_state(['identifiers', 'watermarks']) -%}{{ return(true) }}{%- endif -%}
  {{ return(any_rebuild(engagement_sources() + engagement_order_sources())) }}
{%- endmacro %}

{# pre-hooks: find the affected members and delete their rows #}

{% macro engagement_find_affected() -%}
  {%- if is_incremental() and not engagement_rebuild() -%}
    create table {{ state_relation('affected') }} as
    {{ members_with_news(id_types=engagement_id_types()) }}
  {%- endif -%}
{%- endmacro %}

{% macro engagement_clear() -%}
  {%- if is_incremental() and engagement_rebuild() -%}
    {{ delete_rows(this) }}
  {%- elif is_incremental() -%}
    {{ delete_rows(this, "member_id in (select member_id from " ~ state_relation('affected') ~ ")") }}
  {%- endif -%}
{%- endmacro %}
