{#
  What changed since a model's last build, for the incremental models that follow members
  (fct_member_daily_engagement, segment_outcomes). Each keeps, beside its table, the identifiers it last
  saw (<table>__identifiers) and the newest landing day it read per source (<table>__watermarks);
  members_with_news compares today's with them.
#}

{% macro state_relation(kind) -%}
  {{ return(this.incorporate(path={"identifier": this.identifier ~ "__" ~ kind})) }}
{%- endmacro %}

{% macro drop_state(kind) -%}
  drop table if exists {{ state_relation(kind) }}
{%- endmacro %}

{% macro has_state(kinds) -%}
  {%- for kind in kinds -%}
    {%- if adapter.get_relation(database=this.database, schema=this.schema,
                                identifier=this.identifier ~ '__' ~ kind) is none -%}
      {{ return(false) }}
    {%- endif -%}
  {%- endfor -%}
  {{ return(true) }}
{%- endmacro %}

{% macro identifiers_of(id_types) -%}
  select id_type, id_value, member_id from {{ ref('member_identifiers') }}
  {%- if id_types %}
  where id_type in {{ id_types }}
  {%- endif %}
{%- endmacro %}

{#
  The members with something new since the last build (a select of member_id):
  - on either side of an identifier whose member changed (merges, splits, links, blocked identifiers);
  - with activity landed after the watermark of its source (only check-ins with checkins_only);
  - with an order that changed after the watermark of its source;
  - with opt_outs: with a marketing opt-out landed after the consent watermark.
  id_types: the identifier types compared (none: all).
#}
{% macro members_with_news(id_types=none, checkins_only=false, opt_outs=false) -%}
    with
    previous as (select id_type, id_value, member_id from {{ state_relation('identifiers') }}),
    current_ids as ({{ identifiers_of(id_types) }}),
    watermarks as (select source, loaded_on from {{ state_relation('watermarks') }}),
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
            {%- if checkins_only %} and activity.checkins > 0{% endif %}
    ),
    changed_orders as (
        select orders.member_id
        from {{ ref('fct_orders') }} as orders
        left join watermarks on watermarks.source = orders.source || '.orders'
        where orders.member_id is not null
            and orders.last_changed_on > coalesce(watermarks.loaded_on, cast('1900-01-01' as date))
    ),
    {%- if opt_outs %}
    new_opt_outs as (
        select current_ids.member_id
        from {{ ref('stg_consent__events') }} as consent
        inner join current_ids
            on consent.id_type = current_ids.id_type and consent.id_value = current_ids.id_value
        left join watermarks on watermarks.source = 'consent.events'
        where consent.scope = 'marketing' and not consent.granted
            and consent.loaded_on > coalesce(watermarks.loaded_on, cast('1900-01-01' as date))
    ),
    {%- endif %}
    news as (
        select before_id as member_id from moved where before_id is not null
        union
        select after_id from moved where after_id is not null
        union
        select member_id from new_activity
        union
        select member_id from changed_orders
        {%- if opt_outs %}
        union
        select member_id from new_opt_outs
        {%- endif %}
    )
    select member_id from news
{%- endmacro %}

{# post-hooks: what the next build compares with #}
{% macro remember_identifiers(id_types=none) -%}
  create table {{ state_relation('identifiers') }} as {{ identifiers_of(id_types) }}
{%- endmacro %}

{# extra: more (source, loaded_on) rows, as a union of selects #}
{% macro remember_watermarks(extra=none) -%}
  create table {{ state_relation('watermarks') }} as
  select source, max(loaded_on) as loaded_on from {{ ref('int_source_daily_activity') }} group by source
  union all
  select source || '.orders', max(last_changed_on) from {{ ref('fct_orders') }} group by source
  {%- if extra %}
  union all
  {{ extra }}
  {%- endif %}
{%- endmacro %}
