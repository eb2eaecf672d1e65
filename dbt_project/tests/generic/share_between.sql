{% test share_between(model, column_name, low, high) %}
-- Rows whose value (a share or rate) lies outside [low, high]; a null (an empty denominator) passes.
select {{ column_name }} from {{ model }}
where {{ column_name }} < {{ low }} or {{ column_name }} > {{ high }}
{% endtest %}
