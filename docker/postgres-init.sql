-- First start of the compose stack's PostgreSQL: the Airflow database is POSTGRES_DB; MLflow keeps its runs
-- and registry in `mlflow` and its users and permissions (basic auth) in `mlflow_auth`.
CREATE DATABASE mlflow;
CREATE DATABASE mlflow_auth;
