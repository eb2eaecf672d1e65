{#
  Incremental daily engagement (int_source_daily_activity, then fct_member_daily_engagement).

  int_source_daily_activity is keyed by channel identifiers and only grows: each build adds, per source,
  the rows landed after the newest landing day it holds. fct_member_daily_engagement is keyed by member, and
  member ids come from today's identity, so a build recomputes every day of the members it affects and
  leaves the rest alone. Affected are the members:
  - with activity landed after the last build (per source) or an order that changed after it;
  - on either side of an identifier whose member changed since the last build (merges, splits, links,
    blocked identifiers), compared with the identifiers that build saw.
  The last build's identifiers and watermarks are kept beside the table (<table>__identifiers,
  <table>__watermarks) by its post-hooks; <table>__affected lives only while a build runs.
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

{% macro engagement_state(kind) -%}
  {{ return(this.incorporate(path={"identifier": this.identifier ~ "__" ~ kind})) }}
{%- endmacro %}

{% macro engagement_rebuild() -%}
  {%- if not execute or not is_incremental() or var('as_of_date') -%}{{ return(true) }}{%- endif -%}
  {%- for kind in ('identifiers', 'watermarks') -%}
    {%- if adapter.get_relation(database=this.database, schema=this.schema,
                                identifier=this.identifier ~ '__' ~ kind) is none -%}
      {{ return(true) }}
    {%- endif -%}
  {%- endfor -%}
  {{ return(any_rebuild(engagement_sources() + engagement_order_sources())) }}
{%- endmacro %}

{% macro engagement_drop(kind) -%}
  drop table if exists {{ engagement_state(kind) }}
{%- endmacro %}

{# pre-hooks: find the affected members and delete their rows #}

{% macro engagement_find_affected() -%}
  {%- if is_incremental() and not engagement_rebuild() -%}
    create table {{ engagement_state('affected') }} as
    with
    previous as (select id_type, id_value, member_id from {{ engagement_state('identifiers') }}),
    current_ids as (
        select id_type, id_value, member_id from {{ ref('member_identifiers') }}
        where id_type in {{ engagement_id_types() }}
    ),
    watermarks as (select source, loaded_on from {{ engagement_state('watermarks') }}),
    moved as (
        select previous.member_id as before_id, current_ids.member_id as after_id
        from previous
        full outer join current_ids
            on previous.id_type = current_ids.id_type and previous.id_value = current_ids.id_value
        where previous.member_id is distinct from current_ids.member_id
    ),
    new_activity as (
        select current_ids.member_id
        from {{ ref('int_source_daily_activity') }} as activity
        inner join current_ids
            on current_ids.id_type = activity.id_type and current_ids.id_value = activity.id_value
        left join watermarks on watermarks.source = activity.source
        where activity.loaded_on > coalesce(watermarks.loaded_on, cast('1900-01-01' as date))
    ),
    changed_orders as (
        select orders.member_id
        from {{ ref('fct_orders') }} as orders
        left join watermarks on watermarks.source = orders.source || '.orders'
        where orders.member_id is not null
            and orders.last_changed_on > coalesce(watermarks.loaded_on, cast('1900-01-01' as date))
    )
    select before_id as member_id from moved where before_id is not null
    union
    select after_id from moved where after_id is not null
    union
    select member_id from new_activity
    union
    select member_id from changed_orders
  {%- endif -%}
{%- endmacro %}

{% macro engagement_clear() -%}
  {%- if is_incremental() and engagement_rebuild() -%}
    delete from {{ this }}
  {%- elif is_incremental() -%}
    delete from {{ this }} where member_id in (select member_id from {{ engagement_state('affected') }})
  {%- endif -%}
{%- endmacro %}

{# post-hooks: what the next build compares with #}
{% macro engagement_remember(step) -%}
  {%- if step == 'identifiers' -%}
    create table {{ engagement_state('identifiers') }} as
    select id_type, id_value, member_id from {{ ref('member_identifiers') }}
    where id_type in {{ engagement_id_types() }}
  {%- elif step == 'watermarks' -%}
    create table {{ engagement_state('watermarks') }} as
    select source, max(loaded_on) as loaded_on from {{ ref('int_source_daily_activity') }} group by source
    union all
    select source || '.orders', max(last_changed_on) from {{ ref('fct_orders') }} group by source
  {%- endif -%}
{%- endmacro %}
