"""
### score_members

Scores every member with each model's champion once the marts are rebuilt and passed their quality gate
(the `warehouse.members` Asset). The score date is the day after the newest landed day: features use only
what happened strictly before it. Each model scores its own population (repurchase: buyers; churn: members
active in the last 60 days; conversion: new prospects) into `member_scores` with a calibrated probability, a
decile and the top three reasons in words. A model without a champion yet is skipped, not failed.

`quality_gate` then validates the day's scores (Great Expectations, gate `scores`): probabilities in [0, 1],
balanced deciles, every member of each population scored and nobody else. Only then is the
`warehouse.member_scores` Asset updated, which is what segment delivery waits for. Before that, `monitor`
checks each champion live (realized AUC, Brier and calibration once labels land; feature and score drift):
a critical model's segments are left out of the plans until it is retrained.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import dag, task

from memberflow.assets import MEMBER_SCORES, WAREHOUSE_MEMBERS, WAREHOUSE_POOL
from memberflow.core.settings import schedule_start
from memberflow.core.vocab import MODELS

CHINA = "Asia/Shanghai"


@task
def score_date() -> str:
    """The day after the day the published marts were validated for."""
    from datetime import date

    from airflow.sdk.exceptions import AirflowFailException

    from memberflow.core.settings import get_settings
    from memberflow.warehouse import NotPublishedError, require_published

    try:
        published = require_published(get_settings(), "marts")
    except NotPublishedError as exc:
        raise AirflowFailException(str(exc)) from exc
    return (date.fromisoformat(published["date"]) + timedelta(days=1)).isoformat()


@task
def score(model: str, as_of: str) -> dict:
    """Score the model's population with its champion; no champion yet means nothing to score."""
    from datetime import date

    from memberflow.core.settings import apply_privacy_defaults, get_settings
    from memberflow.pipeline import score_model

    apply_privacy_defaults()
    result = score_model(get_settings(), model, date.fromisoformat(as_of))
    if result is None:
        return {"model": model, "rows": 0, "skipped": f"{model} has no champion yet (run train_models)"}
    return {"model": model, "rows": result.rows, "version": result.version}


@task
def quality_gate(as_of: str, scored: list[dict]) -> dict:
    """Validate the day's member_scores; a critical failure fails the task and skips publish."""
    from datetime import date

    from airflow.sdk.exceptions import AirflowFailException

    from expectations.runner import QualityGateError
    from memberflow.core.settings import apply_privacy_defaults, get_settings
    from memberflow.pipeline import gate_scores

    apply_privacy_defaults()
    if not any(s["rows"] for s in scored):
        raise AirflowFailException("no model has a champion: nothing was scored (run train_models)")
    try:
        result = gate_scores(get_settings(), date.fromisoformat(as_of))
    except QualityGateError as exc:
        raise AirflowFailException(str(exc)) from exc
    return {"date": as_of, "status": result.status, "scored": scored}


@task
def monitor(as_of: str, gate: dict) -> dict:
    """Live monitoring of each champion that scored (ml.monitor): realized AUC, Brier and calibration where
    labels have landed, feature and score drift against the population it was evaluated on. The scores stay
    valid whatever it finds; a critical model's segments are left out of the next plans until it is
    retrained, and its warnings are in this task's log."""
    import logging
    from datetime import date

    from memberflow.core.settings import apply_privacy_defaults, get_settings
    from ml.monitor import monitor as check

    apply_privacy_defaults()
    statuses = {}
    for scored in gate["scored"]:
        if not scored["rows"]:
            continue
        report = check(get_settings(), scored["model"], date.fromisoformat(as_of))
        statuses[scored["model"]] = report.status
        for reason in report.reasons:
            logging.getLogger(__name__).warning("%s %s: %s", scored["model"], report.status, reason)
    return {**gate, "monitoring": statuses}


@task(outlets=[MEMBER_SCORES])
def publish(gate: dict, **context) -> dict:
    context["outlet_events"][MEMBER_SCORES].extra = {
        "as_of": gate["date"],
        "models": {s["model"]: s.get("version") for s in gate["scored"] if s["rows"]},
        "monitoring": gate.get("monitoring", {}),
    }
    return gate


@dag(
    dag_id="score_members",
    schedule=[WAREHOUSE_MEMBERS],
    start_date=schedule_start(),
    catchup=False,
    max_active_runs=1,
    max_active_tasks=1,  # scores go into the one DuckDB warehouse: one writer at a time
    default_args={
        "owner": "ml-engineering",
        "pool": WAREHOUSE_POOL,  # one writer at a time, across workers (memberflow/assets.py)
        "retries": 1,
        "retry_delay": timedelta(minutes=5),
        "execution_timeout": timedelta(hours=1),
    },
    tags=["memberflow", "ml", "scoring"],
    doc_md=__doc__,
)
def score_members() -> None:
    as_of = score_date()
    scored = [score.override(task_id=f"score_{m}")(m, as_of) for m in MODELS]
    publish(monitor(as_of, quality_gate(as_of, scored)))


score_members()
