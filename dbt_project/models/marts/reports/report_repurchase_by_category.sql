-- One row per product category with a replenishment cycle (category_catalog; devices have none): of the
-- members who bought it, how many bought it again within the cycle times repurchase_window_factor of their
-- first purchase of it. Only buyers whose first purchase is at least that window before the report's last
-- day are counted (`eligible`); the median days to the next purchase of the category is over those who
-- came back.
{%- set factor = var('repurchase_window_factor') %}
with

lines as (select * from {{ ref('int_member_order_lines') }}),
catalog as (select * from {{ ref('category_catalog') }}),
period as (select * from {{ ref('int_report_period') }}),

purchase_days as (
    select distinct lines.member_id, lines.category, lines.order_date
    from lines cross join period
    where lines.order_date <= period.observed_through
),

firsts as (
    select member_id, category, min(order_date) as first_bought_on
    from purchase_days
    group by member_id, category
),

buyers as (
    select
        firsts.member_id,
        firsts.category,
        catalog.replenishment_days,
        cast(ceil(catalog.replenishment_days * {{ factor }}) as integer) as window_days,
        firsts.first_bought_on,
        {{ days_between('firsts.first_bought_on', 'min(later.order_date)') }} as days_to_next,
        {{ days_between('firsts.first_bought_on', 'period.observed_through') }} as days_observed
    from firsts
    inner join catalog on firsts.category = catalog.category and catalog.replenishment_days is not null
    cross join period
    left join purchase_days as later
        on
            firsts.member_id = later.member_id
            and firsts.category = later.category
            and firsts.first_bought_on < later.order_date
    group by
        firsts.member_id, firsts.category, catalog.replenishment_days, firsts.first_bought_on,
        period.observed_through
),

final as (
    select
        category,
        replenishment_days,
        window_days,
        count(*) as buyers,
        count(*) filter (where days_observed >= window_days) as eligible,
        count(*) filter (where days_observed >= window_days and days_to_next <= window_days) as repurchased,
        {{ median('days_to_next', 'days_observed >= window_days and days_to_next <= window_days') }}
            as median_days_to_repurchase
    from buyers
    group by category, replenishment_days, window_days
)

select
    *,
    {{ share('repurchased', 'eligible') }} as repurchase_rate
from final
