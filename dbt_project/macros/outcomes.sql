{# segment_outcomes' post-hook: decisions no longer in segment_memberships (a date whose plan was removed, or
   every date once the table is gone) leave the mart. A hook, because an incremental run only replaces the
   dates it recounts. #}
{% macro outcomes_drop_orphans() -%}
  {%- set memberships = adapter.get_relation(
      database=this.database, schema=this.schema, identifier='segment_memberships') -%}
  {%- if memberships is none -%}
    delete from {{ this }}
  {%- else -%}
    delete from {{ this }} where as_of not in (select distinct as_of from {{ memberships }})
  {%- endif -%}
{%- endmacro %}
