-- Funnel stage and average-order-value tier as validity ranges, changing at each purchase:
-- prospect until the first purchase, first_order, repeat from the 2nd, loyal from the 4th;
-- AOV tier of all purchases so far: under_80 (< 80 CNY), 80_120 (80 to < 120), 120_280 (120 to 280),
-- over_280 (> 280).
with

orders as (
    select member_id, order_date, net_amount_cny
    from {{ ref('fct_orders') }}
    where member_id is not null and is_purchase
),
milestones as (select member_id, first_seen_on from {{ ref('int_member_milestones') }}),

purchase_days as (
    select member_id, order_date, count(*) as orders, sum(net_amount_cny) as spend
    from orders
    group by member_id, order_date
),

running as (
    select
        member_id,
        order_date as valid_from,
        lead(order_date) over (partition by member_id order by order_date) as valid_to,
        sum(orders) over (partition by member_id order by order_date) as orders_so_far,
        sum(spend) over (partition by member_id order by order_date)
        / sum(orders) over (partition by member_id order by order_date) as aov_so_far
    from purchase_days
),

first_purchases as (
    select member_id, min(order_date) as first_order_on from purchase_days
    group by member_id
),

funnel as (
    -- a join, not a correlated subquery: PostgreSQL would run that once per member
    select
        milestones.member_id, 'prospect' as tag_value, milestones.first_seen_on as valid_from,
        first_purchases.first_order_on as valid_to
    from milestones
    left join first_purchases on milestones.member_id = first_purchases.member_id
    union all
    select
        member_id,
        case when orders_so_far >= 4 then 'loyal' when orders_so_far >= 2 then 'repeat' else 'first_order' end,
        valid_from, valid_to
    from running
),

value_tier as (
    select
        member_id,
        case
            when aov_so_far < 80 then 'under_80'
            when aov_so_far < 120 then '80_120'
            when aov_so_far <= 280 then '120_280'
            else 'over_280'
        end as tag_value,
        valid_from, valid_to
    from running
),

final as (
    select member_id, 'funnel_stage' as tag_group, tag_value, valid_from, valid_to from funnel
    where valid_to is null or valid_to > valid_from
    union all
    select member_id, 'value_tier', tag_value, valid_from, valid_to from value_tier
)

select * from final
