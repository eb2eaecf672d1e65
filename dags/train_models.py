"""
### train_models

Retrains the churn, repurchase and conversion models every week on the published marts. Each model gets a
point-in-time training set (weekly cutoffs, features strictly before each cutoff, labels strictly after;
the newest cutoff held out), a LightGBM model with early stopping and calibration, and an evaluation on the
held-out members beside the baselines (recency; BG/NBD for repurchase) and the current champion.

Every run is tracked in MLflow (parameters, metrics, ROC / PR / calibration / gain charts, the training-set
manifest) and registered as `challenger`; it becomes `champion` only if it beats the baselines and the
champion by the margins in `ml/models.yml`. Not being promoted is a normal outcome, not a failure. A model
that cannot be trained (too little history, an empty population) fails its own task only.

Then each segment that says `rank_by_uplift: true` gets its uplift model trained on its holdout history and
backtested against its own `rank_by` (`memberflow models uplift`); a segment without enough history yet is
reported, not failed.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from memberflow.assets import MLFLOW_POOL
from memberflow.core.settings import schedule_start
from memberflow.core.vocab import MODELS

CHINA = "Asia/Shanghai"


@task
def train(model: str) -> dict:
    """Train, log to MLflow, register as challenger, apply the promotion gate."""
    from airflow.sdk.exceptions import AirflowFailException

    from memberflow.core.settings import apply_privacy_defaults, get_settings
    from memberflow.warehouse import NotPublishedError
    from ml.datasets import DatasetError
    from ml.train import train as train_model

    apply_privacy_defaults()
    try:
        result = train_model(get_settings(), model)
    except (NotPublishedError, DatasetError) as exc:
        raise AirflowFailException(f"{model}: {exc}") from exc
    return {
        "model": model,
        "version": result.version,
        "promoted": result.decision.promote,
        "reason": result.decision.reason,
        "auc": result.evaluation.metrics["model"]["auc"],
        "brier": result.evaluation.metrics["model"]["brier"],
    }


@task(trigger_rule="all_done")  # a model that could not be trained does not hold it up
def train_uplift() -> dict:
    """The uplift models of the segments that rank by uplift, on the outcomes matured by the last landed
    day: segment -> version and whether it was promoted, or what history it still needs."""
    from airflow.sdk.exceptions import AirflowFailException

    from memberflow.core.settings import apply_privacy_defaults, get_settings
    from memberflow.outreach.uplift import train_segments
    from memberflow.segments import load_segments
    from memberflow.transform import latest_landed_day
    from memberflow.warehouse import NotPublishedError

    apply_privacy_defaults()
    settings = get_settings()
    day = latest_landed_day(settings)
    if day is None:
        raise AirflowFailException("nothing has landed yet: run extract_channels and transform_members first")
    segments = [s for s in load_segments() if s.rank_by_uplift]
    try:
        trained, refused = train_segments(settings, segments, day)
    except NotPublishedError as exc:
        raise AirflowFailException(str(exc)) from exc
    out = {
        r.backtest.segment: {"version": r.version, "promoted": r.champion, "reason": r.backtest.reason}
        for r in trained
    }
    out |= {name: {"version": None, "promoted": False, "reason": why} for name, why in refused.items()}
    return out


@dag(
    dag_id="train_models",
    schedule="0 4 * * 1",  # Mondays 04:00 China time, after the night's transform
    start_date=schedule_start(),
    catchup=False,
    max_active_runs=1,
    max_active_tasks=1,  # two cores: one LightGBM fit at a time, on one thread
    default_args={
        "owner": "ml-engineering",
        "pool": MLFLOW_POOL,  # one writer at a time, across workers (memberflow/assets.py)
        "retries": 1,  # a crashed worker; bad inputs raise AirflowFailException and are not retried
        "retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(hours=3),
    },
    tags=["memberflow", "ml", "training"],
    doc_md=__doc__,
)
def train_models() -> None:
    models = [train.override(task_id=f"train_{model}")(model) for model in MODELS]
    # the uplift backtest compares with rankings by the models' scores of past days, not with the new models
    models[-1] >> train_uplift()


train_models()
