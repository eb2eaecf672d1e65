-- One row per acquisition channel and QR / channel code: how many of the members it brought in placed a
-- first order within 7 and within 15 days. The code is the `state` of the member's first WeCom contact
-- ('none' without one). Prospects are the members who did not buy on the day they were first seen (a
-- member first seen through an order was a buyer from the start); a prospect converted within N days when
-- their first order (not cancelled) came 1 to N days after. Only prospects first seen at least N days
-- before the report's last day are counted for N (their window is over).
with

members as (select * from {{ ref('dim_member') }}),
orders as (select * from {{ ref('fct_orders') }}),
period as (select * from {{ ref('int_report_period') }}),

first_orders as (
    select member_id, min(order_date) as first_order_on
    from orders
    where member_id is not null and status <> 'cancelled'
    group by member_id
),

acquired as (
    select
        members.member_id,
        members.acquisition_channel,
        coalesce(members.acquisition_code, 'none') as source_code,
        members.first_seen_on,
        {{ days_between('members.first_seen_on', 'first_orders.first_order_on') }} as days_to_first_order,
        {{ days_between('members.first_seen_on', 'period.observed_through') }} as days_observed
    from members
    cross join period
    left join first_orders on members.member_id = first_orders.member_id
    where members.first_seen_on <= period.observed_through
),

final as (
    select
        acquisition_channel,
        source_code,
        count(*) as members,
        count(*) filter (where days_to_first_order = 0) as bought_on_first_day,
        count(*) filter (where days_to_first_order is null or days_to_first_order > 0) as prospects,
        count(*) filter (where (days_to_first_order is null or days_to_first_order > 0) and days_observed >= 7)
            as prospects_7d,
        count(*) filter (where days_to_first_order between 1 and 7 and days_observed >= 7) as converted_7d,
        count(*) filter (where (days_to_first_order is null or days_to_first_order > 0) and days_observed >= 15)
            as prospects_15d,
        count(*) filter (where days_to_first_order between 1 and 15 and days_observed >= 15) as converted_15d
    from acquired
    group by acquisition_channel, source_code
)

select
    *,
    {{ share('converted_7d', 'prospects_7d') }} as conversion_7d,
    {{ share('converted_15d', 'prospects_15d') }} as conversion_15d
from final
