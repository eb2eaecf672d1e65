-- One row per product category: the interest it signals, its typical replenishment cycle in days (null
-- for devices, bought rarely) and whether interest in it is health data. Kept as a model rather than a
-- seed: Cosmos runs dbt from a temporary copy of the project, where DuckDB's seed loader cannot find CSVs.
with

final as (
    select * from (values
        ('calcium', 'calcium', 30, false, true),
        ('stomach_care', 'stomach_care', 20, false, true),
        ('glucose_strips', 'blood_glucose', 30, false, true),
        ('glucometer', 'blood_glucose', null, true, true),
        ('bp_medication', 'blood_pressure', 30, false, true),
        ('bp_monitor', 'blood_pressure', null, true, true),
        ('maternal_nutrition', 'maternal_infant', 30, false, true),
        ('infant_formula', 'maternal_infant', 14, false, true),
        ('cognitive_training', 'cognitive_health', 365, false, true),
        ('skincare', 'skincare', 45, false, false),
        ('otc_cold', 'cold_flu', 60, false, true)
    ) as catalog (category, interest, replenishment_days, is_device, health_related)
)

select * from final
