"""Training sets, training, evaluation, scoring and the model registry (no Airflow imports)."""
