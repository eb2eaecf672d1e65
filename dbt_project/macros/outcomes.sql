{#
  Incremental attribution (segment_outcome_counts, the stored half of segment_outcomes).

  A decision's counts can only change while its window has not settled, and then only when something about
  its member changed. So a build recounts, in one of three modes (outcomes_mode):
  - all: the table is new, rebuilt (--full-refresh) or older than its counted_at column: every decision;
  - affected (a daily build): the decision dates not attributed yet or planned again since, and of the
    rows not settled, those of members with something new since the last build: an order changed, a
    check-in or a marketing opt-out landed, an identifier moved (merge, split, link, block; the same
    comparison fct_member_daily_engagement makes), or the delivery ledger changed their decision;
  - unsettled: when the last build's state is missing, on an as-of build, or when a landed table it
    follows was re-landed or landed late (the watermarks cannot say what is new): every date with a row
    not settled, besides the new and replanned ones.
  The last build's identifiers and watermarks are kept beside the table (macros/changes.sql). What this
  build recounts lives in temporary tables while it runs (outcomes_work: <table>__affected, __dates,
  __decisions, __todo), so none of it is written to the database file. What moves without a recount is not
  stored: a row's window state (complete, settled) moves with the last observed day, for every open row
  every day, and the member a decision follows changes with merges, splits and vanished members; the
  segment_outcomes view derives both (today's member from segment_outcome_members). So a daily build
  writes only the rows it recounts.
#}

{% macro outcomes_sources() -%}
  {{ return(engagement_sources() + engagement_order_sources() + ['consent.events']) }}
{%- endmacro %}

{% macro outcomes_relation(name) -%}
  {{ return(adapter.get_relation(database=this.database, schema=this.schema, identifier=name)) }}
{%- endmacro %}

{# A work table of this build: temporary, found first by its bare name. #}
{% macro outcomes_work(kind) -%}
  {{ return(this.identifier ~ "__" ~ kind) }}
{%- endmacro %}

{# How a work table is made: temporary (Spark has temporary views only, which a later delete would
   change: a table, dropped by the post-hooks). #}
{% macro work_table() -%}
  {{- 'create table' if target.type == 'spark' else 'create temporary table' -}}
{%- endmacro %}

{% macro outcomes_drop_work(kind) -%}
  drop table if exists {{ outcomes_work(kind) }}
{%- endmacro %}

{% macro outcomes_mode() -%}
  {%- if not execute or not is_incremental() -%}{{ return('all') }}{%- endif -%}
  {%- set stored = adapter.get_columns_in_relation(this) | map(attribute='name') | list -%}
  {%- if 'counted_at' not in stored -%}{{ return('all') }}{%- endif -%}
  {%- if not has_state(['identifiers', 'watermarks']) -%}{{ return('unsettled') }}{%- endif -%}
  {%- if any_rebuild(outcomes_sources()) -%}{{ return('unsettled') }}{%- endif -%}
  {{ return('affected') }}
{%- endmacro %}

{# A member whose identifiers all left it in a split: its outcomes follow them (the first of its
   successors; segment_outcome_members). #}
{% macro outcomes_split_successors() -%}
  select split_from_member_id, min(member_id) as member_id from {{ ref('member_id_history') }}
  where change_type = 'split'
  group by 1
{%- endmacro %}

{# The last day with data, capped by the as_of_date var (least ignores a null). #}
{% macro outcomes_observed_through() -%}
  {%- set cap = "cast('" ~ var('as_of_date') ~ "' as date)" if var('as_of_date') else "cast(null as date)" -%}
  (select least(max(activity_date), {{ cap }}) from {{ ref('int_member_activity_days') }})
{%- endmacro %}

{# The same day as a literal, read once when the macro runs: a comparison with a literal lets the scan skip
   row groups whose windows all lie on one side of it. #}
{% macro outcomes_observed_day() -%}
  {#- (null before anything was built: when the project is only compiled, or linted) -#}
  {%- if not execute or load_relation(ref('int_member_activity_days')) is none -%}
    {{ return("cast(null as date)") }}
  {%- endif -%}
  {%- set day = run_query("select " ~ outcomes_observed_through()).columns[0].values()[0] -%}
  {{ return("cast('" ~ day ~ "' as date)" if day else "cast(null as date)") }}
{%- endmacro %}

{# pre-hooks: what this build recounts, as whole dates (__dates) and single decisions (__decisions) #}
{% macro outcomes_find_dates() -%}
  {%- set mode = outcomes_mode() -%}
  {%- set memberships = outcomes_relation('segment_memberships') -%}
  {%- if mode == 'all' or memberships is none -%}
    select 1
  {%- else -%}
    {{ work_table() }} {{ outcomes_work('dates') }} as
    with
    decision_dates as (select as_of, max(planned_at) as planned_at from {{ memberships }} group by 1),
    attributed as (
        select as_of, max(planned_at) as planned_at, max(window_end) as window_end
        from {{ this }} group by 1
    )
    select decision_dates.as_of
    from decision_dates
    left join attributed on decision_dates.as_of = attributed.as_of
    where
        attributed.as_of is null
        or decision_dates.planned_at > attributed.planned_at
        {%- if mode == 'unsettled' %}
        or not ({{ outcomes_settled('attributed.window_end', outcomes_observed_day()) }})
        {%- endif %}
  {%- endif -%}
{%- endmacro %}

{% macro outcomes_find_affected() -%}
  {%- if outcomes_mode() == 'affected' and outcomes_relation('segment_memberships') -%}
    {{ work_table() }} {{ outcomes_work('affected') }} as
    {{ members_with_news(checkins_only=true, opt_outs=true) }}
  {%- else -%}
    select 1
  {%- endif -%}
{%- endmacro %}

{% macro outcomes_find_decisions() -%}
  {%- set mode = outcomes_mode() -%}
  {%- set ledger = outcomes_relation('delivery_ledger') -%}
  {%- if mode == 'all' or outcomes_relation('segment_memberships') is none -%}
    select 1
  {%- elif mode == 'unsettled' -%}
    {{ work_table() }} {{ outcomes_work('decisions') }} as
    select
        cast(null as date) as as_of, {{ null_varchar() }} as segment,
        cast(null as varchar) as decided_member_id
    where false
  {%- else -%}
    {{ work_table() }} {{ outcomes_work('decisions') }} as
    with
    watermarks as (select source, loaded_on from {{ state_relation('watermarks') }}),
    stale as (
        select as_of, segment, decided_member_id
        from {{ this }}
        where
            {{ outcomes_open('window_end', outcomes_observed_day()) }}
            and decided_member_id in (
                -- the decided members with news, and those whose member today has news
                select member_id from {{ outcomes_work('affected') }}
                union
                select decided_member_id from {{ ref('segment_outcome_members') }}
                where member_id in (select member_id from {{ outcomes_work('affected') }})
            )
        {%- if ledger %}
        union
        -- a send retried or settled on a later day changes the decision's `sent` (the watermark is a day,
        -- so that day's ledger rows are read again: recounting a decision twice changes nothing)
        select ledger.as_of, ledger.segment, ledger.member_id
        from {{ ledger }} as ledger
        left join watermarks on watermarks.source = 'delivery_ledger'
        where cast(ledger.updated_at as date) >= coalesce(watermarks.loaded_on, cast('1900-01-01' as date))
        {%- endif %}
    )
    select * from stale
    where as_of not in (select as_of from {{ outcomes_work('dates') }})
  {%- endif -%}
{%- endmacro %}

{# pre-hook: the memberships rows this build recounts (__todo). Their dates are bounded by literals: the
   table is in date order, and a bound the scan can prune on reads a few weeks of it instead of all. #}
{% macro outcomes_collect() -%}
  {%- set memberships = outcomes_relation('segment_memberships') -%}
  {%- if outcomes_mode() == 'all' or memberships is none -%}
    select 1
  {%- else -%}
    {%- set dates = run_query("select distinct as_of from " ~ outcomes_work('dates') ~ " order by 1")
        .columns[0].values() | list -%}
    {%- set first = run_query("select min(as_of) from " ~ outcomes_work('decisions'))
        .columns[0].values()[0] -%}
    {{ work_table() }} {{ outcomes_work('todo') }} as
    select * from {{ memberships }}
    {%- if dates %}
    where as_of in ({% for d in dates %}cast('{{ d }}' as date){{ ", " if not loop.last }}{% endfor %})
    {%- else %}
    where false
    {%- endif %}
    {%- if first %}
    union all
    select memberships.*
    from {{ memberships }} as memberships
    inner join {{ outcomes_work('decisions') }} as recount
        on
            memberships.as_of = recount.as_of
            and memberships.segment = recount.segment
            and memberships.member_id = recount.decided_member_id
    where memberships.as_of >= cast('{{ first }}' as date)
    {%- endif %}
  {%- endif -%}
{%- endmacro %}

{# pre-hooks: delete what this build recounts (everything, when it recounts all) #}
{% macro outcomes_clear(kind) -%}
  {%- set mode = outcomes_mode() -%}
  {%- if not is_incremental() -%}
    select 1
  {%- elif mode == 'all' or outcomes_relation('segment_memberships') is none -%}
    {%- if kind == 'dates' -%}{{ delete_rows(this) }}{%- else -%}select 1{%- endif -%}
  {%- elif kind == 'dates' -%}
    {{ delete_rows(this, "as_of in (select as_of from " ~ outcomes_work('dates') ~ ")") }}
  {%- elif target.type == 'spark' -%}
    {{ delete_rows(this, "(as_of, segment, decided_member_id) in (select as_of, segment, decided_member_id from "
        ~ outcomes_work('decisions') ~ ")") }}
  {%- else -%}
    delete from {{ this }} as o using {{ outcomes_work('decisions') }} as d
    where o.as_of = d.as_of and o.segment = d.segment and o.decided_member_id = d.decided_member_id
  {%- endif -%}
{%- endmacro %}

{# A row's window state against the last observed day: complete once its last day has landed, settled
   outcome_late_days after that. One definition for the model's row choice and the segment_outcomes view;
   the column stands alone on one side, so a scan against a literal day can skip row groups. #}
{% macro outcomes_window_complete(window_end, observed) -%}
  {{ window_end }} <= {{ observed }} + 1
{%- endmacro %}

{% macro outcomes_settled_through(observed) -%}
  {{ observed }} + 1 - {{ var('outcome_late_days') }}
{%- endmacro %}

{% macro outcomes_settled(window_end, observed) -%}
  {{ window_end }} <= {{ outcomes_settled_through(observed) }}
{%- endmacro %}

{% macro outcomes_open(window_end, observed) -%}
  {{ window_end }} > {{ outcomes_settled_through(observed) }}
{%- endmacro %}

{# post-hook: the watermarks, with the consent events' and the delivery ledger's #}
{% macro outcomes_remember_watermarks() -%}
  {%- set ledger = outcomes_relation('delivery_ledger') -%}
  {%- set extra -%}
    select 'consent.events', max(loaded_on) from {{ ref('stg_consent__events') }}
    {%- if ledger %}
    union all
    select 'delivery_ledger', max(cast(updated_at as date)) from {{ ledger }}
    {%- endif %}
  {%- endset -%}
  {{ remember_watermarks(extra) }}
{%- endmacro %}

{# segment_outcomes' post-hook: decisions no longer in segment_memberships (a date whose plan was removed, or
   every date once the table is gone) leave the mart. A hook, because an incremental run only replaces the
   rows it recounts. #}
{% macro outcomes_drop_orphans() -%}
  {%- set memberships = outcomes_relation('segment_memberships') -%}
  {%- if memberships is none -%}
    {{ delete_rows(this) }}
  {%- else -%}
    {{ delete_rows(this, "as_of not in (select distinct as_of from " ~ memberships ~ ")") }}
  {%- endif -%}
{%- endmacro %}
