-- Lifecycle migration week over week: one row per week (ending on the report's last day, then every 7 days
-- back, report_weeks of them) and pair of stages, with how many members were in `from_stage` on the day a
-- week before `week_ending` and in `to_stage` on `week_ending` (int_member_lifecycle_ranges). A member not
-- yet seen a week before comes from 'none'. Weeks that start before the first member was seen are left out.
with

ranges as (select * from {{ ref('int_member_lifecycle_ranges') }}),
period as (select * from {{ ref('int_report_period') }}),

weeks as (
    {%- for k in range(var('report_weeks')) %}
    select period.observed_through - {{ 7 * k }} as week_ending from period
    {%- if not loop.last %}
    union all
    {%- endif %}
    {%- endfor %}
),

first_day as (select min(valid_from) as first_seen from ranges),

observed_weeks as (
    select weeks.week_ending
    from weeks cross join first_day
    where weeks.week_ending - 7 >= first_day.first_seen
),

stage_now as (
    select observed_weeks.week_ending, ranges.member_id, ranges.stage
    from observed_weeks
    inner join ranges
        on
            observed_weeks.week_ending >= ranges.valid_from
            and (ranges.valid_to is null or observed_weeks.week_ending < ranges.valid_to)
),

stage_before as (
    select observed_weeks.week_ending, ranges.member_id, ranges.stage
    from observed_weeks
    inner join ranges
        on
            ranges.valid_from <= observed_weeks.week_ending - 7
            and (ranges.valid_to is null or observed_weeks.week_ending - 7 < ranges.valid_to)
),

final as (
    select
        stage_now.week_ending,
        coalesce(stage_before.stage, 'none') as from_stage,
        stage_now.stage as to_stage,
        count(*) as members
    from stage_now
    left join stage_before
        on stage_now.week_ending = stage_before.week_ending and stage_now.member_id = stage_before.member_id
    group by stage_now.week_ending, coalesce(stage_before.stage, 'none'), stage_now.stage
)

select * from final
