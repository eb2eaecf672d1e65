"""The ``memberflow`` command: one entry point for every stage, calling the same functions as the DAGs.

One module per command group (data, models, outreach, ops, demo); ``main`` assembles them. Commands import
the libraries they need (Airflow, dbt, MLflow, Great Expectations) when they run, so ``memberflow --help``
starts in a moment.
"""

from memberflow.cli.main import app

__all__ = ["app"]
