-- One row per acquisition channel: what it cost (stg_marketing__costs) against what the members it brought
-- in have bought. The period runs from the first day in the spend file to the report's last day; members
-- count when first seen in it. CAC = spend / new customers (new members with an order that was not
-- cancelled); LTV to date = their net revenue so far / new customers: observed, not projected, so it grows
-- as the cohort ages. A channel that spent nothing, or brought no customer, shows null ratios.
with

costs as (select * from {{ ref('stg_marketing__costs') }}),
members as (select * from {{ ref('dim_member') }}),
orders as (select * from {{ ref('fct_orders') }}),
period as (select * from {{ ref('int_report_period') }}),

spend_period as (
    select min(costs.spend_date) as spend_from, period.observed_through
    from costs cross join period
    where costs.spend_date <= period.observed_through
    group by period.observed_through
),

spend as (
    select costs.channel as acquisition_channel, sum(costs.amount_cny) as spend_cny
    from costs cross join spend_period
    where costs.spend_date between spend_period.spend_from and spend_period.observed_through
    group by costs.channel
),

new_members as (
    select members.member_id, members.acquisition_channel
    from members cross join spend_period
    where members.first_seen_on between spend_period.spend_from and spend_period.observed_through
),

revenue as (
    select
        new_members.member_id,
        new_members.acquisition_channel,
        count(orders.order_key) filter (where orders.status <> 'cancelled') as orders,
        coalesce(sum(orders.net_amount_cny), 0) as net_revenue_cny
    from new_members
    cross join spend_period
    left join orders
        on new_members.member_id = orders.member_id and spend_period.observed_through >= orders.order_date
    group by new_members.member_id, new_members.acquisition_channel
),

by_channel as (
    select
        acquisition_channel,
        count(*) as new_members,
        count(*) filter (where orders > 0) as new_customers,
        sum(net_revenue_cny) as net_revenue_cny
    from revenue
    group by acquisition_channel
),

channels as (
    select acquisition_channel from spend
    union
    select acquisition_channel from by_channel
),

final as (
    select
        channels.acquisition_channel,
        coalesce(spend.spend_cny, 0) as spend_cny,
        coalesce(by_channel.new_members, 0) as new_members,
        coalesce(by_channel.new_customers, 0) as new_customers,
        coalesce(by_channel.net_revenue_cny, 0) as net_revenue_cny,
        {{ share('spend.spend_cny', 'by_channel.new_members', 2) }} as cost_per_member_cny,
        {{ share('spend.spend_cny', 'by_channel.new_customers', 2) }} as cac_cny,
        {{ share('by_channel.net_revenue_cny', 'by_channel.new_customers', 2) }} as ltv_to_date_cny,
        {{ share('by_channel.net_revenue_cny', 'spend.spend_cny', 2) }} as ltv_to_cac
    from channels
    left join spend on channels.acquisition_channel = spend.acquisition_channel
    left join by_channel on channels.acquisition_channel = by_channel.acquisition_channel
)

select * from final
